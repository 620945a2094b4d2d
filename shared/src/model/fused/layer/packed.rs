//! The parameters of one post-LN transformer layer packed into one flat tensor, so that the fused
//! layer is a single graph node with two inputs (hidden states and parameters). Query, key and value
//! weights sit back to back, making one `[3h, h]` matrix (and one `[3h]` bias) for a single GEMM.

use std::ops::Range;

use candle_core::{Result, Tensor};

/// The packed tensors in order (HF `[out, in]` weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `attention.self.query.weight` `[h, h]`.
    QueryWeight,
    /// `attention.self.key.weight` `[h, h]`.
    KeyWeight,
    /// `attention.self.value.weight` `[h, h]`.
    ValueWeight,
    /// `attention.self.query.bias` `[h]`.
    QueryBias,
    /// `attention.self.key.bias` `[h]`.
    KeyBias,
    /// `attention.self.value.bias` `[h]`.
    ValueBias,
    /// `attention.output.dense.weight` `[h, h]`.
    AttnOutWeight,
    /// `attention.output.dense.bias` `[h]`.
    AttnOutBias,
    /// `attention.output.LayerNorm.weight` `[h]`.
    Norm1Weight,
    /// `attention.output.LayerNorm.bias` `[h]`.
    Norm1Bias,
    /// `intermediate.dense.weight` `[i, h]`.
    InterWeight,
    /// `intermediate.dense.bias` `[i]`.
    InterBias,
    /// `output.dense.weight` `[h, i]`.
    OutWeight,
    /// `output.dense.bias` `[h]`.
    OutBias,
    /// `output.LayerNorm.weight` `[h]`.
    Norm2Weight,
    /// `output.LayerNorm.bias` `[h]`.
    Norm2Bias,
}

/// Every part, in packing order.
pub const PARTS: [Part; 16] = [
    Part::QueryWeight,
    Part::KeyWeight,
    Part::ValueWeight,
    Part::QueryBias,
    Part::KeyBias,
    Part::ValueBias,
    Part::AttnOutWeight,
    Part::AttnOutBias,
    Part::Norm1Weight,
    Part::Norm1Bias,
    Part::InterWeight,
    Part::InterBias,
    Part::OutWeight,
    Part::OutBias,
    Part::Norm2Weight,
    Part::Norm2Bias,
];

/// Where each part lies in the packed vector of a layer with hidden width `h` and intermediate
/// width `inter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packing {
    /// Hidden width.
    pub h: usize,
    /// Intermediate (feed-forward) width.
    pub inter: usize,
}

impl Packing {
    /// The number of values of `part`.
    pub fn len_of(&self, part: Part) -> usize {
        let (h, i) = (self.h, self.inter);
        match part {
            Part::QueryWeight | Part::KeyWeight | Part::ValueWeight | Part::AttnOutWeight => h * h,
            Part::InterWeight | Part::OutWeight => i * h,
            Part::InterBias => i,
            _ => h,
        }
    }

    /// The values of `part` within the packed vector.
    pub fn range(&self, part: Part) -> Range<usize> {
        let mut start = 0;
        for p in PARTS {
            let len = self.len_of(p);
            if p == part {
                return start..start + len;
            }
            start += len;
        }
        unreachable!("every part is in PARTS")
    }

    /// The query, key and value weights together, `[3h, h]`.
    pub fn qkv_weight(&self) -> Range<usize> {
        self.range(Part::QueryWeight).start..self.range(Part::ValueWeight).end
    }

    /// The query, key and value biases together, `[3h]`.
    pub fn qkv_bias(&self) -> Range<usize> {
        self.range(Part::QueryBias).start..self.range(Part::ValueBias).end
    }

    /// Values in all.
    pub fn total(&self) -> usize {
        PARTS.iter().map(|&p| self.len_of(p)).sum()
    }

    /// Packs the 16 tensors (in [`PARTS`] order, each of its part's size) into one flat tensor;
    /// the gradient of the packed tensor flows back to each of them.
    pub fn pack(&self, tensors: &[&Tensor; 16]) -> Result<Tensor> {
        let flat = tensors
            .iter()
            .zip(PARTS)
            .map(|(t, part)| {
                if t.elem_count() != self.len_of(part) {
                    candle_core::bail!(
                        "fused layer: {part:?} has shape {:?}, expected {} values",
                        t.shape(),
                        self.len_of(part)
                    );
                }
                t.flatten_all()
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&flat, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_tile_the_packed_vector() {
        let p = Packing { h: 8, inter: 20 };
        let mut end = 0;
        for part in PARTS {
            let r = p.range(part);
            assert_eq!(r.start, end, "{part:?} follows the previous part");
            end = r.end;
        }
        assert_eq!(end, p.total());
        assert_eq!(p.qkv_weight().len(), 3 * 8 * 8);
        assert_eq!(p.qkv_bias().len(), 3 * 8);
        assert_eq!(p.range(Part::InterWeight).len(), 160);
    }
}
