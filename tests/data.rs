//! Datasets: the formats load, and bad files are errors naming the file and the problem.

use ddpm::data::{self, Dataset, idx, loader};
use std::io::Write;

fn idx_bytes(count: u32, rows: u32, cols: u32, magic: u32) -> Vec<u8> {
    let mut b = Vec::new();
    for w in [magic, count, rows, cols] {
        b.extend(w.to_be_bytes());
    }
    b.extend((0..count * rows * cols).map(|i| (i % 256) as u8));
    b
}

#[test]
fn idx_plain_and_gzip_load_and_scale_to_unit_range() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = idx_bytes(3, 4, 4, 0x803);
    let plain = dir.path().join("images-idx3-ubyte");
    std::fs::write(&plain, &bytes).unwrap();
    let gz = dir.path().join("images-idx3-ubyte.gz");
    let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::default());
    enc.write_all(&bytes).unwrap();
    enc.finish().unwrap();
    for path in [&plain, &gz] {
        let d = idx::load(path).unwrap();
        assert_eq!((d.len(), d.size(), d.channels()), (3, 4, 1));
        let img = d.image(1);
        assert_eq!(img[0], 16.0 / 127.5 - 1.0);
        assert!(img.iter().all(|v| (-1.0..=1.0).contains(v)));
    }
}

#[test]
fn bad_idx_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("magic", idx_bytes(2, 4, 4, 0x1234), "bad magic"),
        ("labels", idx_bytes(2, 4, 4, 0x801), "label file"),
        ("short", idx_bytes(2, 4, 4, 0x803)[..30].to_vec(), "wrong size"),
        ("header", vec![0, 0, 8], "truncated"),
        ("gzip", vec![0x1f, 0x8b, 1, 2, 3], "corrupt gzip"),
    ];
    for (name, bytes, what) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = format!("{:#}", idx::load(&path).unwrap_err());
        assert!(err.contains(what) && err.contains(name), "{name}: {err}");
    }
    let err = format!("{:#}", idx::load(&dir.path().join("missing")).unwrap_err());
    assert!(err.contains("missing"), "{err}");
}

#[test]
fn cifar10_batches_load_and_truncation_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut rec = vec![7u8];
    rec.extend((0..3072).map(|i| (i / 1024) as u8 * 100));
    std::fs::write(dir.path().join("data_batch_1.bin"), [rec.clone(), rec.clone()].concat()).unwrap();
    let d = data::cifar::load(dir.path()).unwrap();
    assert_eq!((d.len(), d.size(), d.channels()), (2, 32, 3));
    // Planar R, G, B become interleaved: pixel 0 is (0, 100, 200).
    assert_eq!(&d.image(0)[..3], &[-1.0, 100.0 / 127.5 - 1.0, 200.0 / 127.5 - 1.0]);
    std::fs::write(dir.path().join("data_batch_2.bin"), &rec[..100]).unwrap();
    let err = format!("{:#}", data::cifar::load(dir.path()).unwrap_err());
    assert!(err.contains("data_batch_2.bin") && err.contains("truncated"), "{err}");
    assert!(data::cifar::load(&dir.path().join("nope")).is_err());
}

#[test]
fn image_folders_load_resized_and_bad_images_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let img = image::RgbImage::from_fn(40, 20, |x, _| image::Rgb([x as u8 * 6, 0, 255]));
    img.save(dir.path().join("a.png")).unwrap();
    let d = data::folder::load(dir.path(), 8).unwrap();
    assert_eq!((d.len(), d.size(), d.channels()), (1, 8, 3));
    assert_eq!(d.image(0)[2], 1.0);
    std::fs::write(dir.path().join("b.jpg"), b"not a jpeg").unwrap();
    let err = format!("{:#}", data::folder::load(dir.path(), 8).unwrap_err());
    assert!(err.contains("b.jpg") && err.contains("unreadable"), "{err}");
}

#[test]
fn unknown_dataset_specs_are_errors() {
    assert!(data::open("mnist", 28, 0).is_err());
    assert!(data::open("idx:", 28, 0).is_err());
    assert_eq!(data::open("builtin", 16, 0).unwrap().size(), 16);
}

#[test]
fn builtin_shapes_are_deterministic_and_varied() {
    let a = data::builtin::Shapes::new(16, 100, 3);
    let b = data::builtin::Shapes::new(16, 100, 3);
    assert_eq!(a.image(5), b.image(5));
    assert_ne!(a.image(5), a.image(6));
    let img = a.image(0);
    assert!(img.iter().any(|&v| v == -1.0) && img.iter().any(|&v| v > 0.0), "a shape on a black background");
}

#[test]
fn batches_walk_a_seeded_permutation_of_each_epoch() {
    let order = loader::epoch_order(50, 1, 0);
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    assert_ne!(order, loader::epoch_order(50, 1, 1));
    assert_eq!(order, loader::epoch_order(50, 1, 0));
    let d = data::builtin::Shapes::new(8, 10, 0);
    let mut state = (u64::MAX, Vec::new());
    let b3 = loader::make_batch(&d, 4, 3, 9, true, &mut state);
    let mut fresh = (u64::MAX, Vec::new());
    assert_eq!(b3, loader::make_batch(&d, 4, 3, 9, true, &mut fresh), "a batch depends only on (seed, step)");
}
