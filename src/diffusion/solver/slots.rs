//! Where each row's converted outputs live on the device. Most solvers read only the three outputs
//! before the current one, so a ring of four slots, d written to slot k % 4, serves them. PNDM's
//! Runge-Kutta warm-up keeps outputs 0, 4 and 8 until evaluations 12 to 14, so a row may instead
//! name the evaluations its h1, h2, h3 come from; the plan then assigns slots by liveness: each
//! output keeps its slot until the last row that reads it, and the ring grows to the most outputs
//! alive at once (six for PNDM).

use anyhow::{Result, bail};

/// The most ring slots a plan may use (the state is 1 + ring sample-sized buffers).
pub const MAX_RING: usize = 16;

/// A row's ring slots: d is written to `write`, h1, h2, h3 are read from `read` (before the write,
/// element by element, so a row may overwrite a slot it reads).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slots {
    pub write: u8,
    pub read: [u8; 3],
}

impl Slots {
    /// The ring of four: row k writes slot k % 4 and reads the three rows before it.
    pub fn ring_of_four(k: usize) -> Slots {
        let s = |back: usize| ((k + 4 - back) % 4) as u8;
        Slots { write: s(0), read: [s(1), s(2), s(3)] }
    }

    /// As one word of the step table: write | h1 << 8 | h2 << 16 | h3 << 24.
    pub fn pack(self) -> u32 {
        let [a, b, c] = self.read;
        u32::from_le_bytes([self.write, a, b, c])
    }

    pub fn unpack(word: u32) -> Slots {
        let [write, a, b, c] = word.to_le_bytes();
        Slots { write, read: [a, b, c] }
    }

    /// The ring slots this row touches: one past the highest.
    pub fn extent(self) -> usize {
        1 + self.read.into_iter().chain([self.write]).max().unwrap_or(0) as usize
    }
}

/// The evaluations each row reads as h1, h2, h3 (None: nothing yet, the coefficient is zero).
pub type Reads = [Option<usize>; 3];

/// The default reads of row k: the three evaluations before it.
pub fn previous_three(k: usize) -> Reads {
    std::array::from_fn(|i| k.checked_sub(i + 1))
}

/// Slots for every row by liveness, lowest free slot first. A read of nothing points at the
/// row's own write slot (its old contents, times a zero coefficient).
pub fn allocate(reads: &[Reads]) -> Result<Vec<Slots>> {
    let mut last = (0..reads.len()).collect::<Vec<_>>();
    for (k, r) in reads.iter().enumerate() {
        for &j in r.iter().flatten() {
            if j >= k {
                bail!("solver row {k} reads the output of evaluation {j}, which is not before it");
            }
            last[j] = last[j].max(k);
        }
    }
    let mut holder: Vec<usize> = Vec::new();
    let mut slot_of = Vec::with_capacity(reads.len());
    let mut out = Vec::with_capacity(reads.len());
    for (k, r) in reads.iter().enumerate() {
        let write = match holder.iter().position(|&j| last[j] < k) {
            Some(s) => s,
            None => {
                holder.push(k);
                holder.len() - 1
            }
        };
        if write >= MAX_RING {
            bail!("solver row {k} needs more than {MAX_RING} earlier outputs kept at once");
        }
        holder[write] = k;
        slot_of.push(write as u8);
        let read = r.map(|j| j.map_or(write as u8, |j| slot_of[j]));
        out.push(Slots { write: write as u8, read });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trips() {
        let s = Slots { write: 5, read: [1, 0, 15] };
        assert_eq!(Slots::unpack(s.pack()), s);
        assert_eq!(s.extent(), 16);
    }

    #[test]
    fn liveness_keeps_every_read_output_until_its_last_reader() {
        // PNDM's pattern: outputs 0, 4, 8 read at 12; 4, 8 at 13; 8 at 14; groups of four.
        let mut reads: Vec<Reads> = (0..20).map(previous_three).collect();
        reads[12] = [Some(8), Some(4), Some(0)];
        reads[13] = [Some(12), Some(8), Some(4)];
        reads[14] = [Some(13), Some(12), Some(8)];
        let slots = allocate(&reads).unwrap();
        // Replay: which output each slot holds; every read must find its output.
        let mut held = [usize::MAX; MAX_RING];
        for (k, (s, r)) in slots.iter().zip(&reads).enumerate() {
            for (i, j) in r.iter().enumerate() {
                if let Some(j) = j {
                    assert_eq!(held[s.read[i] as usize], *j, "row {k} read {i}");
                }
            }
            held[s.write as usize] = k;
        }
        let ring = slots.iter().map(|s| s.extent()).max().unwrap();
        assert_eq!(ring, 6);
        // The default reads need the ring of four.
        let plain = allocate(&(0..9).map(previous_three).collect::<Vec<_>>()).unwrap();
        assert_eq!(plain.iter().map(|s| s.extent()).max(), Some(4));
        assert!(allocate(&[[Some(0), None, None]]).is_err());
    }
}
