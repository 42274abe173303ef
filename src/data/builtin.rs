//! The built-in dataset: RGB images of one filled shape (disc, square or triangle) in one of six
//! colours on a black background, at a random position and size. The generator is known, so the
//! quality of generated samples can be measured against the true distribution (quality.rs).

use super::Dataset;
use crate::math::philox;

pub const PALETTE: [[f32; 3]; 6] =
    [[1.0, 0.2, 0.2], [0.2, 1.0, 0.2], [0.3, 0.4, 1.0], [1.0, 1.0, 0.2], [1.0, 0.3, 1.0], [0.2, 1.0, 1.0]];

pub struct Shapes {
    size: usize,
    count: usize,
    seed: u64,
}

impl Shapes {
    pub fn new(size: usize, count: usize, seed: u64) -> Self {
        Shapes { size, count, seed }
    }
}

/// Renders shape `kind` (0 disc, 1 square, 2 triangle) of `colour` centred at (cx, cy) with
/// radius r (in pixels), as [size, size, 3] in [-1, 1].
pub fn render(size: usize, kind: u32, colour: [f32; 3], cx: f32, cy: f32, r: f32) -> Vec<f32> {
    let mut img = vec![-1.0; size * size * 3];
    for y in 0..size {
        for x in 0..size {
            let (px, py) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            let inside = match kind {
                0 => px * px + py * py <= r * r,
                1 => px.abs() <= r * 0.8 && py.abs() <= r * 0.8,
                _ => py <= r * 0.7 && py >= -r && px.abs() <= (py + r) * 0.6,
            };
            if inside {
                for c in 0..3 {
                    img[(y * size + x) * 3 + c] = colour[c] * 2.0 - 1.0;
                }
            }
        }
    }
    img
}

impl Dataset for Shapes {
    fn len(&self) -> usize {
        self.count
    }
    fn size(&self) -> usize {
        self.size
    }
    fn channels(&self) -> usize {
        3
    }
    fn image(&self, i: usize) -> Vec<f32> {
        let u = |k: u64| philox::uniform(self.seed, 0x5348_4150, i as u64 * 8 + k);
        let s = self.size as f32;
        let kind = (u(0) * 3.0) as u32 % 3;
        let colour = PALETTE[(u(1) * 6.0) as usize % 6];
        let r = s * (0.18 + 0.14 * u(2));
        let (cx, cy) = (r + (s - 2.0 * r) * u(3), r + (s - 2.0 * r) * u(4));
        render(self.size, kind, colour, cx, cy, r)
    }
}
