//! Where two weight files differ: the first tensor (in file order) whose name, dtype, shape or bytes
//! are not the same, with the largest absolute difference for float tensors.

use std::path::Path;

use super::{TensorFile, TensorFileError};

/// The first difference between two weight files.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorDifference {
    /// The tensor.
    pub tensor: String,
    /// What differs.
    pub what: String,
}

impl std::fmt::Display for TensorDifference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tensor `{}`: {}", self.tensor, self.what)
    }
}

/// The first tensor of `expected` that `actual` lacks or holds differently (then `None` if every tensor
/// of both is the same, names, dtypes, shapes and bytes).
pub fn first_difference(
    expected: &Path,
    actual: &Path,
) -> Result<Option<TensorDifference>, TensorFileError> {
    let (a, b) = (TensorFile::open(expected)?, TensorFile::open(actual)?);
    for ta in &a.header.tensors {
        let differ = |what: String| {
            Ok(Some(TensorDifference {
                tensor: ta.name.clone(),
                what,
            }))
        };
        let Some(tb) = b.header.get(&ta.name) else {
            return differ("missing".into());
        };
        if (ta.dtype, &ta.shape) != (tb.dtype, &tb.shape) {
            return differ(format!(
                "{} {:?} vs {} {:?}",
                ta.dtype, ta.shape, tb.dtype, tb.shape
            ));
        }
        let mut xa = vec![0u8; ta.nbytes as usize];
        let mut xb = vec![0u8; tb.nbytes as usize];
        a.read_raw(ta, 0, &mut xa)?;
        b.read_raw(tb, 0, &mut xb)?;
        if xa == xb {
            continue;
        }
        let changed = xa
            .chunks(ta.dtype.size())
            .zip(xb.chunks(ta.dtype.size()))
            .filter(|(x, y)| x != y)
            .count();
        let mut what = format!("{changed} of {} elements differ", ta.numel());
        if ta.dtype.is_weight_float() {
            let (mut fa, mut fb, mut scratch) =
                (vec![0f32; ta.numel()], vec![0f32; ta.numel()], Vec::new());
            a.read_f32(ta, 0, &mut fa, &mut scratch)?;
            b.read_f32(tb, 0, &mut fb, &mut scratch)?;
            let max = fa
                .iter()
                .zip(&fb)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            what.push_str(&format!(", max abs difference {max:e}"));
        }
        return differ(what);
    }
    if let Some(extra) = b.header.names().find(|n| a.header.get(n).is_none()) {
        return Ok(Some(TensorDifference {
            tensor: extra.to_string(),
            what: "not expected".into(),
        }));
    }
    Ok(None)
}
