//! A running sum of a round's diffs for the linear strategies (`mean`, `task-arithmetic`, without
//! clipping): each diff is added to an f64 sum as soon as it is accepted, so closing the round is one
//! pass over the model (base + scale/n × sum) whatever the number of contributions.
//!
//! The sum is the engine's own accumulator with the contributions in fold order (f64 addition is not
//! associative, so the order is part of the result): [`fuse_weights`](super::fuse_weights) with
//! `FuseOptions::order` = [`RunningSum::order`] writes the same bits, which is how `coldfuse verify`
//! replays an iteration closed from a running sum. The sum lives in a sparse file of 8 bytes per
//! float element of the base, outside memory; it is a cache, rebuilt by folding again after a restart.

use std::{
    fs::{File, OpenOptions},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    time::Instant,
};

use super::{
    engine::{apply_update, copy_chunk, decode_finite, work_items, Item},
    strategy::scaled_mean,
    ContributionReport, FuseOptions, FusionConfig, FusionError, FusionReport,
};
use crate::{
    diff::{BaseInfo, DiffManifest, DiffReader, DiffTensor, Scratch},
    parallel::{default_threads, for_each_item},
    tensorfile::{TensorFileWriter, TensorInfo},
};

/// Whether a round fused with `config` can be closed from a running sum: a linear strategy and no
/// clipping (clip factors need every diff's norm, or the round's median, before the first add).
pub fn foldable(config: &FusionConfig) -> bool {
    !config.clips()
        && config
            .strategy
            .build()
            .is_ok_and(|s| s.linear_scale(1).is_some())
}

/// A contribution in the sum.
#[derive(Debug, Clone)]
pub struct Folded {
    /// Its manifest.
    pub manifest: DiffManifest,
    /// The factor its values were multiplied by (asynchronous staleness; 1 otherwise).
    pub scale: f32,
}

/// Where one float tensor of the base sits in the sum, and what the sum holds for it.
#[derive(Debug, Clone)]
struct Slot {
    /// Element offset in the file.
    offset: u64,
    /// Some folded diff covered it (otherwise every value is an implicit +0).
    touched: bool,
    /// A diff folded after the last that covered it did not (the engine adds its +0 row, which
    /// turns a −0 sum into +0; applied on the next add or at the close).
    pending_zero: bool,
}

impl Slot {
    /// The state after one more diff, which covers the tensor or not.
    fn after(&mut self, covered: bool) {
        if covered {
            self.touched = true;
            self.pending_zero = false;
        } else if self.touched {
            self.pending_zero = true;
        }
    }
}

/// Adds one diff's `row` to `acc` (which holds the sum so far when `slot.touched`) the way the
/// engine's accumulator does: the round's `first` row as is (1·r₀), a tensor's first row after
/// other diffs onto +0, and a +0 row for every diff in between that did not cover the tensor.
fn add(acc: &mut [f64], row: &[f32], slot: &Slot, first: bool) {
    if !slot.touched {
        let zero = if first { None } else { Some(0.0f64) };
        for (a, &r) in acc.iter_mut().zip(row) {
            *a = zero.map_or(r as f64, |z| z + r as f64);
        }
    } else {
        if slot.pending_zero {
            acc.iter_mut().for_each(|a| *a += 0.0);
        }
        acc.iter_mut().zip(row).for_each(|(a, &r)| *a += r as f64);
    }
}

/// The running sum of one round's diffs over one base.
#[derive(Debug)]
pub struct RunningSum {
    path: PathBuf,
    file: File,
    base_sha256: String,
    /// The base's tensor names, in file order.
    names: Vec<String>,
    /// Per base tensor: its slot (None for tensors that are not float, which no diff covers).
    slots: Vec<Option<Slot>>,
    folded: Vec<Folded>,
    poisoned: bool,
}

/// Elements per unit of parallel work.
const CHUNK: usize = 1 << 14;

impl RunningSum {
    /// Creates an empty sum over `base` in a new file at `path` (sparse: blocks are allocated as
    /// diffs touch them; removed when the sum is dropped).
    pub fn create(path: &Path, base: &BaseInfo) -> Result<Self, FusionError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| FusionError::io(path, e))?;
        let mut offset = 0u64;
        let slots = base
            .file
            .header
            .tensors
            .iter()
            .map(|t| {
                t.dtype.is_weight_float().then(|| {
                    let slot = Slot {
                        offset,
                        touched: false,
                        pending_zero: false,
                    };
                    offset += t.numel() as u64;
                    slot
                })
            })
            .collect();
        file.set_len(offset * 8)
            .map_err(|e| FusionError::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            base_sha256: base.sha256.clone(),
            names: base.file.header.names().map(str::to_string).collect(),
            slots,
            folded: Vec::new(),
            poisoned: false,
        })
    }

    /// SHA-256 of the base the sum is over.
    pub fn base_sha256(&self) -> &str {
        &self.base_sha256
    }

    /// The contributions folded so far, in fold order.
    pub fn folded(&self) -> &[Folded] {
        &self.folded
    }

    /// The fold order as contributor ids (what lineage records and a replay passes back).
    pub fn order(&self) -> Vec<String> {
        let ids = self.folded.iter().map(|f| f.manifest.contributor.clone());
        ids.collect()
    }

    /// Adds `diff` (opened against this sum's base, scaled by its `scale`). A diff whose values are
    /// not finite fails as that contribution's error. After any error the sum is unusable (later
    /// calls fail): start a new one.
    pub fn fold(&mut self, diff: &DiffReader, threads: Option<usize>) -> Result<(), FusionError> {
        self.check_usable()?;
        self.check_new(&diff.manifest.contributor, &[])?;
        let first = self.folded.is_empty();
        let covered = self.covered_by(diff)?;
        let mut items = Vec::new();
        for (t, &index) in diff.tensors().iter().zip(&covered) {
            let slot = self.slots[index].as_ref().expect("float tensor");
            let mut start = 0;
            while start < t.numel {
                let len = CHUNK.min(t.numel - start);
                items.push((t, slot.offset + start as u64, start, len, slot.clone()));
                start += len;
            }
        }
        self.poisoned = true;
        let threads = threads.unwrap_or_else(default_threads).max(1);
        for_each_item(
            threads,
            items.len(),
            || (vec![0f32; CHUNK], vec![0f64; CHUNK], Scratch::default()),
            |(row, acc, scratch), i| {
                let (tensor, offset, start, len, ref slot) = items[i];
                let (row, acc) = (&mut row[..len], &mut acc[..len]);
                decode_finite(diff, tensor, start, row, diff.scale, scratch)?;
                if slot.touched {
                    self.read(offset, acc)?;
                }
                add(acc, row, slot, first);
                self.write(offset, acc)
            },
        )?;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(slot) = slot {
                slot.after(covered.contains(&i));
            }
        }
        self.folded.push(Folded {
            manifest: diff.manifest.clone(),
            scale: diff.scale,
        });
        self.poisoned = false;
        Ok(())
    }

    /// Writes the next base's weights to `out`: `base` + the strategy's update from the sum with
    /// the diffs `last` folded in after it, in this order, during the same pass (each opened
    /// against this sum's base and scaled, as for [`fold`](Self::fold)). The same bits as the engine
    /// fusing [`order`](Self::order) then `last` with the same options; `last` may be empty.
    pub fn finish(
        &self,
        last: &[DiffReader],
        base: &BaseInfo,
        config: &FusionConfig,
        out: &Path,
        options: &FuseOptions,
    ) -> Result<FusionReport, FusionError> {
        let started = Instant::now();
        self.check_usable()?;
        config.validate()?;
        if base.sha256 != self.base_sha256 {
            return Err(FusionError::Config(format!(
                "the running sum is over base {}, not {}",
                self.base_sha256, base.sha256
            )));
        }
        for (i, d) in last.iter().enumerate() {
            let earlier: Vec<&DiffReader> = last[..i].iter().collect();
            self.check_new(&d.manifest.contributor, &earlier)?;
        }
        // Per base tensor, each of `last`'s tensor for it (if it covers it).
        let mut pending: Vec<Vec<Option<&DiffTensor>>> =
            vec![vec![None; last.len()]; self.slots.len()];
        for (k, d) in last.iter().enumerate() {
            for (t, index) in d.tensors().iter().zip(self.covered_by(d)?) {
                pending[index][k] = Some(t);
            }
        }
        let strategy = config.strategy.build()?;
        let n = self.folded.len() + last.len();
        let needed = strategy.min_contributions().max(1);
        if n < needed {
            return Err(FusionError::TooFew {
                strategy: strategy.name().into(),
                needed,
                got: n,
            });
        }
        let scale = match strategy.linear_scale(n) {
            Some(scale) if !config.clips() => scale,
            _ => {
                return Err(FusionError::Config(format!(
                    "`{}` with these settings cannot be fused from a running sum",
                    strategy.name()
                )))
            }
        };
        let inv_n = 1.0 / n as f64;
        let header = &base.file.header;
        let touched = |i: usize| {
            let slot = self.slots[i].as_ref()?;
            (slot.touched || pending[i].iter().any(Option::is_some)).then_some(i)
        };
        let index = |name: &str| header.tensors.iter().position(|t| t.name == name);
        let chunk = options.chunk_elements.max(1);
        let items = work_items(base, chunk, |name| index(name).and_then(touched));
        let writer = TensorFileWriter::create(out, &header.specs(), &header.metadata)?;
        let threads = options.threads.unwrap_or_else(default_threads).max(1);
        let sums = for_each_item(
            threads,
            items.len(),
            || CloseBuffers::new(chunk),
            |b, i| match items[i] {
                Item::Copy { tensor, start, len } => {
                    copy_chunk(base, &writer, tensor, start, len, &mut b.bytes).map(|_| 0.0)
                }
                Item::Fuse {
                    tensor,
                    plan,
                    start,
                    len,
                } => {
                    let mut slot = self.slots[plan].clone().expect("float tensor");
                    let (acc, row) = (&mut b.acc[..len], &mut b.row[..len]);
                    if slot.touched {
                        self.read(slot.offset + start as u64, acc)?;
                    }
                    // The folds `last` would have made, element by element, in this pass.
                    for (k, d) in last.iter().enumerate() {
                        if let Some(t) = pending[plan][k] {
                            decode_finite(d, t, start, row, d.scale, &mut b.scratch)?;
                            add(acc, row, &slot, self.folded.is_empty() && k == 0);
                        }
                        slot.after(pending[plan][k].is_some());
                    }
                    if slot.pending_zero {
                        acc.iter_mut().for_each(|a| *a += 0.0);
                    }
                    scaled_mean(acc, inv_n, scale, &mut b.update[..len]);
                    let (update, values) = (&b.update[..len], &mut b.values[..len]);
                    apply_update(base, &writer, tensor, start, update, values, &mut b.halves)
                }
            },
        )?;
        writer.finish_with(options.sync)?;
        let fused: Vec<&TensorInfo> = (0..header.tensors.len())
            .filter_map(touched)
            .map(|i| &header.tensors[i])
            .collect();
        let folded = self.folded.iter().map(|f| (&f.manifest, f.scale));
        let contributions = folded.chain(last.iter().map(|d| (&d.manifest, d.scale)));
        Ok(FusionReport {
            config: config.clone(),
            contributions: contributions
                .clone()
                .map(|(m, scale)| ContributionReport {
                    contributor: m.contributor.clone(),
                    diff_sha256: m.diff_sha256.clone(),
                    num_examples: m.num_examples,
                    weight: inv_n,
                    clip_factor: scale,
                    l2_norm: None,
                })
                .collect(),
            fused_tensors: fused.len(),
            passthrough_tensors: header.tensors.len() - fused.len(),
            elements: fused.iter().map(|t| t.numel() as u64).sum(),
            update_l2_norm: sums.iter().sum::<f64>().sqrt(),
            input_bytes: base.file.len() + contributions.map(|(m, _)| m.diff_bytes).sum::<u64>(),
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// The names of the base tensors some folded diff, or one of `last`, covers, in the base's order.
    pub fn covered(&self, last: &[DiffReader], base: &BaseInfo) -> Vec<String> {
        let tensors = base.file.header.tensors.iter().zip(&self.slots);
        tensors
            .filter(|(t, s)| {
                s.as_ref().is_some_and(|s| s.touched)
                    || last.iter().any(|d| d.tensor(&t.name).is_some())
            })
            .map(|(t, _)| t.name.clone())
            .collect()
    }

    /// Refuses a contributor already in the sum, or among `also` (diffs being added with it).
    fn check_new(&self, contributor: &str, also: &[&DiffReader]) -> Result<(), FusionError> {
        let folded = self.folded.iter().map(|f| &f.manifest.contributor);
        let mut others = folded.chain(also.iter().map(|d| &d.manifest.contributor));
        match others.any(|c| c == contributor) {
            true => Err(FusionError::Config(format!(
                "{contributor} is already in the running sum"
            ))),
            false => Ok(()),
        }
    }

    fn check_usable(&self) -> Result<(), FusionError> {
        match self.poisoned {
            true => Err(FusionError::Config(
                "the running sum is incomplete after a failed fold".into(),
            )),
            false => Ok(()),
        }
    }

    /// The base tensor index of each of `diff`'s tensors (all must be float tensors of the base).
    fn covered_by(&self, diff: &DiffReader) -> Result<Vec<usize>, FusionError> {
        let indices = diff.tensors().iter().map(|t| self.tensor_index(&t.name));
        indices.collect()
    }

    fn tensor_index(&self, name: &str) -> Result<usize, FusionError> {
        self.slots
            .iter()
            .zip(&self.names)
            .position(|(s, n)| s.is_some() && n == name)
            .ok_or_else(|| FusionError::Config(format!("{name} is not a float tensor of the base")))
    }

    fn read(&self, offset: u64, acc: &mut [f64]) -> Result<(), FusionError> {
        self.file
            .read_exact_at(bytemuck::cast_slice_mut(acc), offset * 8)
            .map_err(|e| FusionError::io(&self.path, e))
    }

    fn write(&self, offset: u64, acc: &[f64]) -> Result<(), FusionError> {
        self.file
            .write_all_at(bytemuck::cast_slice(acc), offset * 8)
            .map_err(|e| FusionError::io(&self.path, e))
    }
}

impl Drop for RunningSum {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One thread's buffers while closing from a sum.
struct CloseBuffers {
    acc: Vec<f64>,
    row: Vec<f32>,
    scratch: Scratch,
    update: Vec<f32>,
    values: Vec<f32>,
    halves: Vec<u16>,
    bytes: Vec<u8>,
}

impl CloseBuffers {
    fn new(chunk: usize) -> Self {
        Self {
            acc: vec![0.0; chunk],
            row: vec![0.0; chunk],
            scratch: Scratch::default(),
            update: vec![0.0; chunk],
            values: vec![0.0; chunk],
            halves: Vec::new(),
            bytes: Vec::new(),
        }
    }
}
