//! The streaming fusion driver: tensor by tensor, chunk by chunk, on all cores, with peak memory
//! independent of the number of contributions (a few chunk buffers per thread), writing the new
//! weights file beside its final path and renaming it into place only when every byte is written.

use std::{path::Path, time::Instant};

use half::{bf16, f16};

use super::{clip_bound, clip_factors, Chunk, CombineScratch, FusionConfig, FusionError, Strategy};
use crate::{
    diff::{BaseInfo, DiffError, DiffReader, DiffTensor, Scratch},
    parallel::{default_threads, for_each_item},
    tensorfile::{Dtype, TensorFileWriter, TensorInfo},
};

/// Tuning knobs of the engine (results do not depend on them, except `order`).
#[derive(Debug, Clone)]
pub struct FuseOptions {
    /// The order the contributions are combined in, as contributor ids: the fold order a running sum
    /// recorded (`RunningSum`). Default: the canonical order, ascending diff hash.
    pub order: Option<Vec<String>>,
    /// Worker threads (default: all cores).
    pub threads: Option<usize>,
    /// Elements per work item.
    pub chunk_elements: usize,
    /// Flush the output to disk before renaming it into place (default true).
    pub sync: bool,
}

impl Default for FuseOptions {
    fn default() -> Self {
        Self {
            order: None,
            threads: None,
            chunk_elements: 1 << 14,
            sync: true,
        }
    }
}

/// How one contribution entered the fusion.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ContributionReport {
    /// Contributor id.
    pub contributor: String,
    /// SHA-256 of the diff file.
    pub diff_sha256: String,
    /// Training examples reported.
    pub num_examples: u64,
    /// Weight in the fusion (sums to 1 over contributions).
    pub weight: f64,
    /// Factor applied to the diff: norm clipping × staleness scale (1 when neither applies).
    pub clip_factor: f32,
    /// Global L2 norm of the diff (measured only when clipping).
    pub l2_norm: Option<f64>,
}

/// What a fusion did.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FusionReport {
    /// The settings used.
    pub config: FusionConfig,
    /// Contributions in the canonical order they were combined (ascending diff hash).
    pub contributions: Vec<ContributionReport>,
    /// Tensors updated.
    pub fused_tensors: usize,
    /// Tensors copied unchanged (not in the diffs: non-body or non-float).
    pub passthrough_tensors: usize,
    /// Elements updated.
    pub elements: u64,
    /// Global L2 norm of the update (fused − base).
    pub update_l2_norm: f64,
    /// Bytes of input files (base + diffs).
    pub input_bytes: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// One unit of parallel work.
pub(super) enum Item {
    Fuse {
        tensor: usize,
        plan: usize,
        start: usize,
        len: usize,
    },
    Copy {
        tensor: usize,
        start: usize,
        len: usize,
    },
}

/// A fused tensor: its name, and where it is in each diff (None: that diff leaves it unchanged,
/// i.e. contributes zeros; a diff may cover any subset of the body, the sparse form of a full diff).
struct Plan<'a> {
    key: u64,
    name: &'a str,
    diffs: Vec<Option<&'a DiffTensor>>,
}

struct Inputs<'a> {
    base: &'a BaseInfo,
    diffs: Vec<&'a DiffReader>,
    strategy: Box<dyn Strategy>,
    weights: Vec<f64>,
    factors: Vec<f32>,
    keys: Vec<u64>,
    plans: Vec<Plan<'a>>,
    thresholds: Vec<Vec<f32>>,
}

/// Fuses `diffs` into `base` with `config`, writing the new weights file to `out`.
pub fn fuse_weights(
    base: &BaseInfo,
    diffs: &[DiffReader],
    config: &FusionConfig,
    out: &Path,
    options: &FuseOptions,
) -> Result<FusionReport, FusionError> {
    let started = Instant::now();
    config.validate()?;
    let threads = options.threads.unwrap_or_else(default_threads).max(1);
    let (inputs, norms) = prepare(base, diffs, config, options.order.as_deref(), threads)?;
    let chunk = options.chunk_elements.max(1);
    let items = work_items(base, chunk, |name| {
        inputs.plans.iter().position(|p| p.name == name)
    });
    let specs = base.file.header.specs();
    let writer = TensorFileWriter::create(out, &specs, &base.file.header.metadata)?;
    let sums = for_each_item(
        threads,
        items.len(),
        || Worker::new(inputs.diffs.len(), chunk),
        |w, i| w.run(&inputs, &writer, &items[i]),
    )?;
    writer.finish_with(options.sync)?;
    {
        let fused: Vec<&TensorInfo> = inputs
            .plans
            .iter()
            .map(|p| base.tensor(p.name).expect("checked against the base"))
            .collect();
        Ok(FusionReport {
            config: config.clone(),
            contributions: inputs
                .diffs
                .iter()
                .enumerate()
                .map(|(i, d)| ContributionReport {
                    contributor: d.manifest.contributor.clone(),
                    diff_sha256: d.manifest.diff_sha256.clone(),
                    num_examples: d.manifest.num_examples,
                    weight: inputs.weights[i],
                    clip_factor: inputs.factors[i],
                    l2_norm: norms.as_ref().map(|n| n[i]),
                })
                .collect(),
            fused_tensors: fused.len(),
            passthrough_tensors: base.file.header.tensors.len() - fused.len(),
            elements: fused.iter().map(|t| t.numel() as u64).sum(),
            update_l2_norm: sums.iter().sum::<f64>().sqrt(),
            input_bytes: base.file.len() + diffs.iter().map(|d| d.manifest.diff_bytes).sum::<u64>(),
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// Decodes elements `start..start + row.len()` of `tensor` of `reader` times `factor` into `row`.
/// Diffs are validated finite at acceptance; checked again so that one that is not (a file changed
/// since) is named, and quarantined, rather than failing the round.
pub(super) fn decode_finite(
    reader: &DiffReader,
    tensor: &DiffTensor,
    start: usize,
    row: &mut [f32],
    factor: f32,
    scratch: &mut Scratch,
) -> Result<(), FusionError> {
    reader
        .decode(tensor, start, row, factor, scratch)
        .map_err(|e| diff_error(reader, e))?;
    match row.iter().position(|v| !v.is_finite()) {
        Some(j) => {
            let source = DiffError::NonFinite {
                name: tensor.name.clone(),
                index: start + j,
                value: row[j],
            };
            Err(diff_error(reader, source))
        }
        None => Ok(()),
    }
}

/// `source` as contribution `d`'s error.
fn diff_error(d: &DiffReader, source: DiffError) -> FusionError {
    FusionError::Diff {
        contributor: d.manifest.contributor.clone(),
        sha256: d.manifest.diff_sha256.clone(),
        source: Box::new(source),
    }
}

/// Orders contributions (canonically, or as `order` says), checks they fit the base and each other,
/// and computes weights, clip factors and (for TIES) magnitude thresholds.
fn prepare<'a>(
    base: &'a BaseInfo,
    diffs: &'a [DiffReader],
    config: &FusionConfig,
    order: Option<&[String]>,
    threads: usize,
) -> Result<(Inputs<'a>, Option<Vec<f64>>), FusionError> {
    let strategy = config.strategy.build()?;
    let needed = strategy.min_contributions().max(1);
    if diffs.len() < needed {
        return Err(FusionError::TooFew {
            strategy: strategy.name().into(),
            needed,
            got: diffs.len(),
        });
    }
    let mut ordered: Vec<&DiffReader> = diffs.iter().collect();
    match order {
        None => ordered.sort_by(|a, b| {
            (&a.manifest.diff_sha256, &a.manifest.contributor)
                .cmp(&(&b.manifest.diff_sha256, &b.manifest.contributor))
        }),
        Some(order) => ordered = in_order(ordered, order)?,
    }
    for d in &ordered {
        if d.manifest.base.sha256 != base.sha256 {
            let source = DiffError::WrongBase {
                expected: base.sha256.clone(),
                found: d.manifest.base.sha256.clone(),
            };
            return Err(diff_error(d, source));
        }
    }
    let norms = match config.clips() {
        true => Some(for_each_item(
            threads,
            ordered.len(),
            || (),
            |_, i| {
                let d = ordered[i];
                d.scan().map(|s| s.l2_norm).map_err(|e| diff_error(d, e))
            },
        )?),
        false => None,
    };
    let factors: Vec<f32> = match &norms {
        Some(n) => clip_factors(n, clip_bound(n, config.clip_norm, config.clip_to_median)),
        None => vec![1.0; ordered.len()],
    }
    .into_iter()
    .zip(&ordered)
    .map(|(f, d)| f * d.scale)
    .collect();
    let weights = weights(&ordered, strategy.as_ref(), config.cap_examples_to_median)?;
    let keys = ordered
        .iter()
        .map(|d| u64::from_str_radix(&d.manifest.diff_sha256[..16], 16).unwrap_or(0))
        .collect();
    // Every tensor any diff covers, in the base file's order (independent of which diff has it).
    let plans: Vec<Plan<'a>> = base
        .file
        .header
        .tensors
        .iter()
        .filter(|t| ordered.iter().any(|d| d.tensor(&t.name).is_some()))
        .map(|t| Plan {
            key: name_key(&t.name),
            name: &t.name,
            diffs: ordered.iter().map(|d| d.tensor(&t.name)).collect(),
        })
        .collect();
    let mut inputs = Inputs {
        base,
        diffs: ordered,
        strategy,
        weights,
        factors,
        keys,
        plans,
        thresholds: Vec::new(),
    };
    if let Some(density) = inputs.strategy.magnitude_density() {
        inputs.thresholds = thresholds(&inputs, density, threads)?;
    }
    Ok((inputs, norms))
}

/// `diffs` in `order` (contributor ids), which must name each of them exactly once.
fn in_order<'a>(
    diffs: Vec<&'a DiffReader>,
    order: &[String],
) -> Result<Vec<&'a DiffReader>, FusionError> {
    let ordered: Vec<&DiffReader> = order
        .iter()
        .filter_map(|id| {
            diffs
                .iter()
                .find(|d| &d.manifest.contributor == id)
                .copied()
        })
        .collect();
    let unique: std::collections::BTreeSet<&String> = order.iter().collect();
    if ordered.len() != diffs.len() || order.len() != diffs.len() || unique.len() != order.len() {
        return Err(FusionError::Config(format!(
            "the fold order names {} contributors ({} distinct) for {} diffs, not each once",
            order.len(),
            unique.len(),
            diffs.len()
        )));
    }
    Ok(ordered)
}

/// Each contribution's weight: 1/n, or (weighted strategies) its self-reported example count over the
/// total, each count first capped at `cap` × the median count when set (a site claiming a huge count
/// cannot take the whole weight). Counts are summed in f64: exact below 2^53, never overflowing.
fn weights(
    ordered: &[&DiffReader],
    strategy: &dyn Strategy,
    cap: Option<f64>,
) -> Result<Vec<f64>, FusionError> {
    let n = ordered.len();
    if !strategy.weighted_by_examples() {
        return Ok(vec![1.0 / n as f64; n]);
    }
    let mut counts: Vec<f64> = ordered
        .iter()
        .map(|d| d.manifest.num_examples as f64)
        .collect();
    if let Some(bound) = clip_bound(&counts, None, cap) {
        counts.iter_mut().for_each(|c| *c = c.min(bound));
    }
    let total: f64 = counts.iter().sum();
    if total == 0.0 {
        return Err(FusionError::Config(
            "`weighted` needs example counts, but every contribution reports 0".into(),
        ));
    }
    Ok(counts.iter().map(|c| c / total).collect())
}

/// FNV-1a of a tensor name: a stable per-tensor key.
fn name_key(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Per fused tensor, per contribution: the magnitude of its k-th largest (clipped) value, where k
/// keeps `density` of the tensor.
fn thresholds(
    inputs: &Inputs<'_>,
    density: f32,
    threads: usize,
) -> Result<Vec<Vec<f32>>, FusionError> {
    let n = inputs.diffs.len();
    let pairs: Vec<(usize, usize)> = (0..inputs.plans.len())
        .flat_map(|p| (0..n).map(move |i| (p, i)))
        .collect();
    let flat = for_each_item(
        threads,
        pairs.len(),
        || (Vec::<f32>::new(), Scratch::default()),
        |(buf, scratch), k| {
            let (p, i) = pairs[k];
            let Some(tensor) = inputs.plans[p].diffs[i] else {
                // Not in this diff: all zeros, nothing to keep.
                return Ok::<f32, FusionError>(f32::INFINITY);
            };
            let reader = inputs.diffs[i];
            buf.resize(tensor.numel, 0.0);
            reader
                .decode(tensor, 0, buf, inputs.factors[i], scratch)
                .map_err(|e| diff_error(reader, e))?;
            buf.iter_mut().for_each(|v| *v = v.abs());
            let k = crate::diff::Encoding::kept(density, tensor.numel);
            if k == 0 {
                return Ok::<f32, FusionError>(f32::INFINITY);
            }
            let (_, kth, _) = buf.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
            Ok(*kth)
        },
    )?;
    Ok(flat.chunks(n).map(|c| c.to_vec()).collect())
}

/// The base's tensors in chunks of `chunk` elements: fused where `plan_of(name)` names a plan, copied
/// otherwise.
pub(super) fn work_items(
    base: &BaseInfo,
    chunk: usize,
    plan_of: impl Fn(&str) -> Option<usize>,
) -> Vec<Item> {
    let mut items = Vec::new();
    for (tensor, info) in base.file.header.tensors.iter().enumerate() {
        let numel = info.numel();
        let plan = plan_of(&info.name);
        let mut start = 0;
        while start < numel {
            let len = chunk.min(numel - start);
            items.push(match plan {
                Some(plan) => Item::Fuse {
                    tensor,
                    plan,
                    start,
                    len,
                },
                None => Item::Copy { tensor, start, len },
            });
            start += len;
        }
    }
    items
}

/// One thread's reusable buffers.
struct Worker {
    rows: Vec<Vec<f32>>,
    base: Vec<f32>,
    update: Vec<f32>,
    halves: Vec<u16>,
    bytes: Vec<u8>,
    scratch: Scratch,
    combine: CombineScratch,
}

impl Worker {
    fn new(n: usize, chunk: usize) -> Self {
        Self {
            rows: vec![vec![0.0; chunk]; n],
            base: vec![0.0; chunk],
            update: vec![0.0; chunk],
            halves: Vec::new(),
            bytes: Vec::new(),
            scratch: Scratch::default(),
            combine: CombineScratch::default(),
        }
    }

    /// Runs one item; returns the squared L2 norm of the update it wrote.
    fn run(
        &mut self,
        inputs: &Inputs<'_>,
        writer: &TensorFileWriter,
        item: &Item,
    ) -> Result<f64, FusionError> {
        match *item {
            Item::Copy { tensor, start, len } => {
                copy_chunk(inputs.base, writer, tensor, start, len, &mut self.bytes)?;
                Ok(0.0)
            }
            Item::Fuse {
                tensor,
                plan,
                start,
                len,
            } => self.fuse(inputs, writer, tensor, plan, start, len),
        }
    }

    fn fuse(
        &mut self,
        inputs: &Inputs<'_>,
        writer: &TensorFileWriter,
        tensor: usize,
        plan: usize,
        start: usize,
        len: usize,
    ) -> Result<f64, FusionError> {
        let thresholds = inputs
            .thresholds
            .get(plan)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let plan = &inputs.plans[plan];
        for (i, reader) in inputs.diffs.iter().enumerate() {
            let row = &mut self.rows[i][..len];
            match plan.diffs[i] {
                Some(t) => {
                    decode_finite(reader, t, start, row, inputs.factors[i], &mut self.scratch)?
                }
                None => row.fill(0.0),
            }
        }
        let chunk = Chunk {
            rows: &self.rows,
            len,
            weights: &inputs.weights,
            thresholds,
            keys: &inputs.keys,
            tensor_key: plan.key,
            start,
        };
        inputs
            .strategy
            .combine(&chunk, &mut self.update[..len], &mut self.combine);
        apply_update(
            inputs.base,
            writer,
            tensor,
            start,
            &self.update[..len],
            &mut self.base[..len],
            &mut self.halves,
        )
    }
}

/// Copies elements `start..start + len` of base tensor number `tensor` unchanged.
pub(super) fn copy_chunk(
    base: &BaseInfo,
    writer: &TensorFileWriter,
    tensor: usize,
    start: usize,
    len: usize,
    bytes: &mut Vec<u8>,
) -> Result<(), FusionError> {
    let info = &base.file.header.tensors[tensor];
    bytes.resize(len * info.dtype.size(), 0);
    base.file.read_raw(info, start, bytes)?;
    writer.write_at(tensor, start, bytes)?;
    Ok(())
}

/// `base + update` for one chunk: reads the base's values into `values`, adds `update`, checks the
/// result is finite and writes it in the tensor's dtype; answers Σ update².
pub(super) fn apply_update(
    base: &BaseInfo,
    writer: &TensorFileWriter,
    tensor: usize,
    start: usize,
    update: &[f32],
    values: &mut [f32],
    halves: &mut Vec<u16>,
) -> Result<f64, FusionError> {
    let info = &base.file.header.tensors[tensor];
    base.file.read_f32(info, start, values, halves)?;
    let (sum_sq, finite) = add_update(values, update);
    if !finite {
        let j = values.iter().position(|b| !b.is_finite()).unwrap_or(0);
        return Err(FusionError::NonFinite {
            tensor: info.name.clone(),
            index: start + j,
        });
    }
    write_values(writer, info, tensor, start, values, halves)?;
    Ok(sum_sq)
}

/// Writes f32 `values` as elements `start..` of tensor number `tensor`, in its dtype.
fn write_values(
    writer: &TensorFileWriter,
    info: &TensorInfo,
    tensor: usize,
    start: usize,
    values: &[f32],
    halves: &mut Vec<u16>,
) -> Result<(), FusionError> {
    use half::slice::HalfFloatSliceExt;
    match info.dtype {
        Dtype::F32 => writer.write_at(tensor, start, bytemuck::cast_slice(values))?,
        Dtype::F16 | Dtype::Bf16 => {
            halves.resize(values.len(), 0);
            if info.dtype == Dtype::F16 {
                let halves = bytemuck::cast_slice_mut::<u16, f16>(halves);
                halves.convert_from_f32_slice(values);
                if let Some(j) = halves.iter().position(|h| h.is_infinite()) {
                    return Err(FusionError::NonFinite {
                        tensor: info.name.clone(),
                        index: start + j,
                    });
                }
            } else {
                bytemuck::cast_slice_mut::<u16, bf16>(halves).convert_from_f32_slice(values);
            }
            writer.write_at(tensor, start, bytemuck::cast_slice(halves))?;
        }
        other => unreachable!("diffs only cover float tensors, not {other}"),
    }
    Ok(())
}

/// `base += update`; returns Σ update² and whether every result is finite. Eight independent lanes
/// let the compiler vectorise the reductions (a single f32 accumulator would serialise them).
fn add_update(base: &mut [f32], update: &[f32]) -> (f64, bool) {
    const LANES: usize = 8;
    const EXP: u32 = 0x7f80_0000;
    // Squares in f64: an update beyond 1.8e19 (a poisoned one) would overflow f32 to inf.
    let mut sq = [0f64; LANES];
    let mut bad = [0u32; LANES];
    let mut b_chunks = base.chunks_exact_mut(LANES);
    let mut u_chunks = update.chunks_exact(LANES);
    for (b, u) in (&mut b_chunks).zip(&mut u_chunks) {
        for k in 0..LANES {
            b[k] += u[k];
            sq[k] += u[k] as f64 * u[k] as f64;
            bad[k] |= u32::from(b[k].to_bits() & EXP == EXP);
        }
    }
    let mut sum: f64 = sq.iter().sum();
    let mut any_bad = bad.iter().any(|&b| b != 0);
    for (b, &u) in b_chunks
        .into_remainder()
        .iter_mut()
        .zip(u_chunks.remainder())
    {
        *b += u;
        sum += u as f64 * u as f64;
        any_bad |= !b.is_finite();
    }
    (sum, !any_bad)
}
