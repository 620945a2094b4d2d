// Inverted dropout on the GPU with the CPU kernel's mask (shared/src/model/fused/dropout.rs): element i is
// kept when the top 32 bits of SplitMix64(seed + i * golden) are below `threshold`, and scaled by
// 1 / (1 - p). The same seed gives the same mask on every device, and nothing crosses to the host.
#include <stdint.h>

__device__ __forceinline__ uint64_t splitmix64(uint64_t seed, uint64_t i) {
    uint64_t z = seed + i * 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

extern "C" __global__ void coldfuse_dropout_f32(
    const float *x, float *y, uint64_t n, uint64_t seed, uint64_t threshold, float scale) {
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (uint64_t)blockDim.x * gridDim.x) {
        y[i] = (splitmix64(seed, i) >> 32) < threshold ? x[i] * scale : 0.0f;
    }
}
