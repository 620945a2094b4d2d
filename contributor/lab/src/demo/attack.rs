//! Poisoning attacks for the demo (`--attack K`): an attacker site that uploads, each round, an honest
//! site's diff of that round multiplied by K — to measure what the deployment's defences leave of it.

use std::path::Path;

use coldfuse_shared::diff::{
    BaseInfo, ContributionInfo, DiffBuilder, DiffManifest, DiffReader, Encoding, Scratch,
    DIFF_FILE, MANIFEST_FILE,
};

/// Writes into `out` the honest contribution in `honest` (against the base in `base_dir`) with every
/// value multiplied by `scale`, as `contributor` (f32, so 1e20 stays finite).
pub fn scaled_copy(
    base_dir: &Path,
    honest: &Path,
    scale: f32,
    contributor: &str,
    out: &Path,
) -> anyhow::Result<DiffManifest> {
    let manifest = DiffManifest::from_json(&std::fs::read(honest.join(MANIFEST_FILE))?)?;
    let base = BaseInfo::open_with_sha256(base_dir, manifest.base.sha256.clone())?;
    let reader = DiffReader::open(&honest.join(DIFF_FILE), manifest.clone(), &base)?;
    let mut builder = DiffBuilder::new(Encoding::F32)?;
    let mut scratch = Scratch::default();
    for (tensor, entry) in reader.tensors().iter().zip(&manifest.tensors) {
        let mut values = vec![0f32; tensor.numel];
        reader.decode(tensor, 0, &mut values, scale, &mut scratch)?;
        builder.add(&tensor.name, entry.dtype, &entry.shape, &values)?;
    }
    let info = ContributionInfo {
        contributor: contributor.to_string(),
        num_examples: manifest.num_examples,
        metrics: manifest.metrics.clone(),
    };
    Ok(builder.finish(out, manifest.base.clone(), &manifest.architecture, info)?)
}
