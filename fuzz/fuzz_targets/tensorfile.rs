//! Any bytes as a safetensors file: opening and reading every tensor must never panic or read
//! outside the file; it either works or returns a typed error.
#![no_main]

mod common;

use coldfuse_shared::tensorfile::TensorFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::file("t.safetensors", data);
    let Ok(file) = TensorFile::open(&path) else {
        return;
    };
    let mut raw = Vec::new();
    let mut floats = Vec::new();
    let mut scratch = Vec::new();
    for info in &file.header.tensors {
        if info.nbytes > 1 << 24 {
            continue;
        }
        raw.resize(info.nbytes as usize, 0);
        file.read_raw(info, 0, &mut raw).expect("a checked tensor is readable");
        if info.dtype.is_weight_float() {
            floats.resize(info.numel(), 0.0);
            file.read_f32(info, 0, &mut floats, &mut scratch).expect("float tensor reads");
        }
    }
});
