//! Chunked loops that run on rayon's pool once a tensor is large enough to pay for it.

use rayon::prelude::*;

/// Elements below which work stays on the calling thread.
pub(crate) const PAR_MIN_ELEMS: usize = 1 << 15;

/// Calls `f(chunk_index, out_chunk, in_chunk)` for matching chunks of `out` and `input`
/// (`out_chunk` elements of `out` per `in_chunk` elements of `input`), in parallel when
/// `parallel` is set. Both chunk sizes must be positive.
pub(crate) fn zip_chunks<O, I, F>(out: &mut [O], out_chunk: usize, input: &[I], in_chunk: usize, parallel: bool, f: F)
where
    O: Send,
    I: Sync,
    F: Fn(usize, &mut [O], &[I]) + Sync + Send,
{
    debug_assert!(out_chunk > 0 && in_chunk > 0);
    if parallel {
        out.par_chunks_mut(out_chunk)
            .zip(input.par_chunks(in_chunk))
            .enumerate()
            .for_each(|(i, (o, x))| f(i, o, x));
    } else {
        out.chunks_mut(out_chunk)
            .zip(input.chunks(in_chunk))
            .enumerate()
            .for_each(|(i, (o, x))| f(i, o, x));
    }
}

/// Like [`zip_chunks`] with a second output: `side_chunk` elements of `side` per chunk.
pub(crate) fn zip_chunks2<O, S, I, F>(
    (out, out_chunk): (&mut [O], usize),
    (side, side_chunk): (&mut [S], usize),
    (input, in_chunk): (&[I], usize),
    parallel: bool,
    f: F,
) where
    O: Send,
    S: Send,
    I: Sync,
    F: Fn(&mut [O], &mut [S], &[I]) + Sync + Send,
{
    debug_assert!(out_chunk > 0 && side_chunk > 0 && in_chunk > 0);
    if parallel {
        out.par_chunks_mut(out_chunk)
            .zip(side.par_chunks_mut(side_chunk))
            .zip(input.par_chunks(in_chunk))
            .for_each(|((o, s), x)| f(o, s, x));
    } else {
        out.chunks_mut(out_chunk)
            .zip(side.chunks_mut(side_chunk))
            .zip(input.chunks(in_chunk))
            .for_each(|((o, s), x)| f(o, s, x));
    }
}

/// How many units of `elems_per_unit` elements make a parallel task of a few thousand elements.
pub(crate) fn units_per_task(elems_per_unit: usize) -> usize {
    (8192 / elems_per_unit.max(1)).max(1)
}

/// `roundf` (half away from zero) of `y` as an integer, for `|y| < 2^23`, without a libm
/// call so that loops around it vectorize. NaN gives 0.
#[inline]
pub(crate) fn round_half_away(y: f32) -> i32 {
    let i = y as i32; // truncates toward zero
    let f = y - i as f32; // exact for |y| < 2^23
    i + i32::from(f >= 0.5) - i32::from(f <= -0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_half_away_matches_roundf() {
        let mut v = vec![
            0.5f32,
            -0.5,
            1.5,
            -1.5,
            2.5,
            0.499_999_97,
            -0.499_999_97,
            126.5,
            -127.49,
            0.0,
            -0.0,
        ];
        let mut s = 1u32;
        for _ in 0..100_000 {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            v.push((s >> 8) as f32 / (1u32 << 24) as f32 * 300.0 - 150.0);
        }
        for y in v {
            assert_eq!(round_half_away(y), y.round() as i32, "{y}");
            assert_eq!(round_half_away(y.next_up()), y.next_up().round() as i32, "{y}");
        }
        assert_eq!(round_half_away(f32::NAN), 0);
    }
}
