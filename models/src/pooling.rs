//! From per-token hidden states to one vector per sequence: [`Pooling`], [`l2_normalize`],
//! [`cosine`]. Host code: these read each sequence's real tokens once, which is cheap beside
//! the encoder.

use std::path::Path;

use aihal_core::{CoreError, Result};
use serde::Deserialize;

use crate::weights::io_error;

/// How a sentence-transformers model reduces a sequence's hidden states to one vector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Pooling {
    /// The mean over the sequence's real (unpadded) tokens (`pooling_mode_mean_tokens`).
    #[default]
    Mean,
    /// The first token's state, `[CLS]` (`pooling_mode_cls_token`).
    Cls,
}

/// `1_Pooling/config.json` as written (its flags are the file's own form).
#[derive(Deserialize)]
#[allow(clippy::struct_excessive_bools)]
struct RawPooling {
    #[serde(default)]
    word_embedding_dimension: Option<usize>,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

impl Pooling {
    /// Reads a sentence-transformers `1_Pooling/config.json`; returns the pooling and the
    /// `word_embedding_dimension` it states, if any.
    ///
    /// Errors: `Io` naming the file; `InvalidConfig` naming the file as
    /// [`from_json`](Self::from_json) says.
    pub fn from_file(path: impl AsRef<Path>) -> Result<(Self, Option<usize>)> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| io_error(path, &e))?;
        Self::from_json(&text).map_err(|e| match e {
            CoreError::InvalidConfig(m) => CoreError::invalid_config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses the text of a `1_Pooling/config.json`.
    ///
    /// Errors: `InvalidConfig` for malformed JSON, for a mode other than mean or CLS (max,
    /// mean-sqrt-len, weighted mean, last token), and for none or several modes at once
    /// (sentence-transformers concatenates several; that is not supported here).
    pub fn from_json(text: &str) -> Result<(Self, Option<usize>)> {
        let raw: RawPooling =
            serde_json::from_str(text).map_err(|e| CoreError::invalid_config(format!("pooling config: {e}")))?;
        for (on, name) in [
            (raw.pooling_mode_max_tokens, "pooling_mode_max_tokens"),
            (
                raw.pooling_mode_mean_sqrt_len_tokens,
                "pooling_mode_mean_sqrt_len_tokens",
            ),
            (raw.pooling_mode_weightedmean_tokens, "pooling_mode_weightedmean_tokens"),
            (raw.pooling_mode_lasttoken, "pooling_mode_lasttoken"),
        ] {
            if on {
                return Err(CoreError::invalid_config(format!(
                    "{name} is not supported (mean or CLS pooling only)"
                )));
            }
        }
        let pooling = match (raw.pooling_mode_mean_tokens, raw.pooling_mode_cls_token) {
            (true, false) => Self::Mean,
            (false, true) => Self::Cls,
            (true, true) => {
                return Err(CoreError::invalid_config(
                    "pooling: both mean and CLS are on (concatenated pooling is not supported)",
                ))
            }
            (false, false) => return Err(CoreError::invalid_config("pooling: no pooling mode is on")),
        };
        Ok((pooling, raw.word_embedding_dimension))
    }

    /// One vector per sequence from `hidden` (`[valid.len(), seq_len, dim]`, row-major): the
    /// mean over the first `valid[b]` tokens of sequence `b` (summed in f64), or its first
    /// token.
    ///
    /// Errors: `ShapeMismatch` when `hidden` is not that size; `InvalidInput` for a valid
    /// length of 0 or above `seq_len`.
    pub fn pool(self, hidden: &[f32], seq_len: usize, dim: usize, valid: &[usize]) -> Result<Vec<Vec<f32>>> {
        let want = valid.len() * seq_len * dim;
        if hidden.len() != want {
            return Err(CoreError::shape_mismatch(
                "pooling: hidden states [batch, seq_len, dim]",
                [valid.len(), seq_len, dim],
                [hidden.len()],
            ));
        }
        if let Some((b, &n)) = valid.iter().enumerate().find(|(_, &n)| n == 0 || n > seq_len) {
            return Err(CoreError::invalid_input(format!(
                "pooling: sequence {b} has {n} valid tokens of {seq_len}"
            )));
        }
        Ok(valid
            .iter()
            .enumerate()
            .map(|(b, &n)| {
                let seq = &hidden[b * seq_len * dim..][..seq_len * dim];
                match self {
                    Self::Cls => seq[..dim].to_vec(),
                    Self::Mean => {
                        let mut sum = vec![0.0f64; dim];
                        for row in seq[..n * dim].chunks_exact(dim) {
                            sum.iter_mut().zip(row).for_each(|(s, &v)| *s += f64::from(v));
                        }
                        sum.iter().map(|s| (s / n as f64) as f32).collect()
                    }
                }
            })
            .collect())
    }
}

/// Scales `v` to unit Euclidean length, dividing by `max(‖v‖, 1e-12)` as PyTorch's
/// `F.normalize` does (a zero vector stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
    let inv = 1.0 / norm.max(1e-12);
    for x in v.iter_mut() {
        *x = (f64::from(*x) * inv) as f32;
    }
}

/// The cosine of the angle between `a` and `b` (0 when either is zero), computed in f64.
///
/// # Panics
/// When the lengths differ.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "cosine of vectors of different lengths");
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        (ab / (aa.sqrt() * bb.sqrt())) as f32
    }
}
