//! Ranged reads of a stored object (`Store::range_source`, what the fusion engine streams diffs
//! through): every byte as stored, whatever the offsets, lengths and threads; each byte fetched once
//! when a region is read in order, even by several threads at once; nothing past the region a read
//! belongs to; reads past the end refused.

use coldfuse_shared::{store::Store, tensorfile::ByteSource};
use rand::{rngs::StdRng, Rng, SeedableRng};

const LEN: usize = (1 << 20) + 3;
const BLOCK: u64 = 64 << 10;

async fn stored() -> (tempfile::TempDir, Store, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("file://{}", dir.path().display())).unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let bytes: Vec<u8> = (0..LEN).map(|_| rng.random()).collect();
    let file = dir.path().join("object.bin.local");
    std::fs::write(&file, &bytes).unwrap();
    store.put_file("objects/a.bin", &file).await.unwrap();
    (dir, store, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_reads_return_the_stored_bytes() {
    let (_dir, store, bytes) = stored().await;
    let source = store.range_source("objects/a.bin", BLOCK).await.unwrap();
    assert_eq!(source.len(), LEN as u64);
    tokio::task::spawn_blocking(move || {
        let mut rng = StdRng::seed_from_u64(8);
        for _ in 0..500 {
            let offset = rng.random_range(0..LEN as u64);
            let len = rng.random_range(0..=(LEN as u64 - offset).min(300_000)) as usize;
            let region_end = rng.random_range(offset..=LEN as u64);
            let mut buf = vec![0u8; len];
            source.read_exact_at(&mut buf, offset, region_end).unwrap();
            assert!(
                buf == bytes[offset as usize..offset as usize + len],
                "at {offset}+{len}"
            );
        }
        let mut buf = [0u8; 4];
        let past = source.read_exact_at(&mut buf, LEN as u64 - 2, LEN as u64);
        assert_eq!(past.unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
    })
    .await
    .unwrap();
}

/// Two regions (tensors) read chunk by chunk in order by four threads, as the engine's workers do:
/// each byte is fetched once, and a read never pulls bytes of the next region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regions_read_in_order_are_fetched_once() {
    let (_dir, store, bytes) = stored().await;
    let before = store.bytes_read();
    let source = store.range_source("objects/a.bin", BLOCK).await.unwrap();
    let split = 300_001u64;
    let regions = [(0u64, split), (split, LEN as u64)];
    tokio::task::spawn_blocking(move || {
        const CHUNK: u64 = 8 << 10;
        let next = std::sync::atomic::AtomicU64::new(0);
        let chunks: Vec<(u64, u64, u64)> = regions
            .iter()
            .flat_map(|&(start, end)| {
                (start..end)
                    .step_by(CHUNK as usize)
                    .map(move |o| (o, (o + CHUNK).min(end), end))
            })
            .collect();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as usize;
                    let Some(&(from, to, region_end)) = chunks.get(i) else {
                        break;
                    };
                    let mut buf = vec![0u8; (to - from) as usize];
                    source.read_exact_at(&mut buf, from, region_end).unwrap();
                    assert!(buf == bytes[from as usize..to as usize]);
                });
            }
        });
    })
    .await
    .unwrap();
    assert_eq!(store.bytes_read() - before, LEN as u64, "each byte once");
}
