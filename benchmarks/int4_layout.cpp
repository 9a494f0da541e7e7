// Would another layout of the int4 codes make decode's products faster? One decode step's int4 products of a
// shape (every weight read once, one activation row), three ways over the same bytes on the same threads:
//   kernel       seqedge's decode kernel on MatMulNBits' row layout (int4_matmul_core.h rows_vnni);
//   interleaved  the same bytes in groups of 16 rows (per group and block of 32: four 64-byte vectors, lane n of
//                vector j = bytes 4j .. 4j + 3 of row n's block — what both exporters now store where N allows),
//                on the kernel for that layout (group16_row_vnni): a vpdpbusd multiplies 16 rows at once against
//                one broadcast of 4 activation codes and no row needs a horizontal sum;
//   read         a plain sum of the codes' bytes (what streaming them costs here, with no arithmetic).
// Rounds alternate the three; each prints the median of its calls, and the end the median of the rounds' own
// ratios to `kernel` with their range (the machine swings between rounds; a round's three run within a second).
//
//   g++ -O3 -std=c++17 -I runtimes/native/kernels benchmarks/int4_layout.cpp -o /tmp/int4_layout -lpthread
//   /tmp/int4_layout [llama-135m|mamba-130m] [rounds]        (x86-64 with AVX-512 VNNI; 2 threads)
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "int4_matmul_core.h"

using namespace seqedge::int4_core;

namespace {

constexpr int kThreads = 2;

struct Product {
  int64_t N, K;
  std::vector<uint8_t> codes;          // (N, nb, 16) MatMulNBits' layout
  std::vector<uint16_t> scales;        // (N, nb) float16 bits
  std::vector<uint8_t> codes16;        // (N / 16, nb, 4, 64) interleaved
  std::vector<uint16_t> scales16;      // (N / 16, nb, 16)
  std::vector<float> a, y;
  std::vector<uint8_t> scratch;
  MatMul p;
};

// The same codes and scales, 16 rows side by side (a last group short of 16 rows padded with zero codes).
void interleave(Product& m) {
  const int64_t nb = blocks(m.K), groups = (m.N + 15) / 16;
  m.codes16.assign(groups * nb * 256, 0);
  m.scales16.assign(groups * nb * 16, 0);
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t b = 0; b < nb; ++b)
      for (int64_t n = 0; n < 16 && 16 * g + n < m.N; ++n) {
        const int64_t row = 16 * g + n;
        for (int64_t j = 0; j < 4; ++j)
          std::memcpy(&m.codes16[((g * nb + b) * 4 + j) * 64 + 4 * n], &m.codes[(row * nb + b) * 16 + 4 * j], 4);
        m.scales16[(g * nb + b) * 16 + n] = m.scales[row * nb + b];
      }
}

// Groups [g0, g1) of the interleaved layout against activation row 0: the kernel the exporters' grouped codes run
// on (int4_matmul_core.h group16_row_vnni).
SEQEDGE_TARGET_VNNI __attribute__((noinline)) void interleaved_groups(const Product& m, int64_t g0, int64_t g1) {
  MatMul p = m.p;
  p.w = m.codes16.data();
  p.scales = m.scales16.data();
  p.interleaved = true;
  for (int64_t g = g0; g < g1; ++g) group16_row_vnni(p, 0, g);
}

SEQEDGE_TARGET_VNNI __attribute__((noinline)) int64_t read_bytes(const uint8_t* w, int64_t n) {
  __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
  for (int64_t i = 0; i + 128 <= n; i += 128) {
    s0 = _mm512_add_epi64(s0, _mm512_load_si512(w + i));
    s1 = _mm512_add_epi64(s1, _mm512_load_si512(w + i + 64));
  }
  return _mm512_reduce_add_epi64(_mm512_add_epi64(s0, s1));
}

enum Way { kKernel, kInterleaved, kRead, kWays };
const char* const kNames[kWays] = {"kernel", "interleaved", "read"};

// Thread t's share of every product, a spin barrier after each (as a runtime's pool ends a node).
struct Step {
  std::vector<Product>* products;
  Way way;
  std::atomic<int> arrived{0}, generation{0};
  std::atomic<int64_t> sink{0};

  void barrier() {
    const int gen = generation.load();
    if (arrived.fetch_add(1) == kThreads - 1) {
      arrived = 0;
      generation.fetch_add(1);
    } else {
      while (generation.load() == gen) {
      }
    }
  }

  void run(int t) {
    for (Product& m : *products) {
      const int64_t groups = (m.N + 15) / 16, g0 = groups * t / kThreads, g1 = groups * (t + 1) / kThreads;
      if (way == kKernel) {
        rows_vnni(m.p, 0, 16 * g0, std::min(m.N, 16 * g1) - 16 * g0);
      } else if (way == kInterleaved) {
        interleaved_groups(m, g0, g1);
      } else {
        const int64_t lines = static_cast<int64_t>(m.codes.size()) / 128;
        sink += read_bytes(m.codes.data() + lines * t / kThreads * 128, (lines * (t + 1) / kThreads - lines * t / kThreads) * 128);
      }
      barrier();
    }
  }
};

std::vector<Product> shape_products(const std::string& shape) {
  std::vector<std::pair<int64_t, int64_t>> nk;  // (N, K) per call of one decode step, as the ONNX graph fuses them
  if (shape == "mamba-130m") {
    for (int l = 0; l < 24; ++l) nk.insert(nk.end(), {{3072, 768}, {80, 1536}, {1536, 48}, {768, 1536}});
    nk.push_back({49152, 768});
  } else {
    for (int l = 0; l < 30; ++l) nk.insert(nk.end(), {{960, 576}, {576, 576}, {3072, 576}, {576, 1536}});
    nk.push_back({49152, 576});
  }
  std::mt19937 rng(1);
  std::vector<Product> out(nk.size());
  for (size_t i = 0; i < nk.size(); ++i) {
    Product& m = out[i];
    m.N = nk[i].first;
    m.K = nk[i].second;
    const int64_t nb = blocks(m.K);
    m.codes.resize(m.N * nb * 16);
    m.scales.resize(m.N * nb);
    for (auto& c : m.codes) c = static_cast<uint8_t>(rng());
    for (auto& s : m.scales) s = static_cast<uint16_t>(0x3000 + (rng() & 0x3ff));
    m.a.resize(m.K);
    for (auto& x : m.a) x = static_cast<float>(rng() % 2000) / 1000.f - 1.f;
    m.y.resize(m.N + 16);
    interleave(m);
    m.scratch.resize(scratch_bytes(1, m.K));
    m.p = MatMul{m.a.data(), m.codes.data(), m.scales.data(), m.y.data(), 1, m.N, m.K};
    place_scratch(m.p, m.scratch.data());
    quantize_row(m.p, 0);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (!vnni()) {
    std::fprintf(stderr, "this CPU has no AVX-512 VNNI: the kernel compared here is that one\n");
    return 2;
  }
  const std::string shape = argc > 1 ? argv[1] : "llama-135m";
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 8;
  std::vector<Product> products = shape_products(shape);
  double bytes = 0;
  for (const Product& m : products) bytes += static_cast<double>(m.codes.size() + 2 * m.scales.size());
  // the grouped kernel computes what the row kernel does (to float rounding)
  for (Product& m : products) {
    rows_vnni(m.p, 0, 0, m.N);
    const std::vector<float> want(m.y.begin(), m.y.begin() + m.N);
    interleaved_groups(m, 0, (m.N + 15) / 16);
    double err = 0, scale = 0;
    for (int64_t n = 0; n < m.N; ++n) {
      err = std::max(err, static_cast<double>(std::fabs(want[n] - m.y[n])));
      scale = std::max(scale, static_cast<double>(std::fabs(want[n])));
    }
    if (err > 1e-5 * scale + 1e-6) {
      std::fprintf(stderr, "the grouped kernel differs from the row kernel (N %ld, K %ld): %g of %g\n",
                   static_cast<long>(m.N), static_cast<long>(m.K), err, scale);
      return 1;
    }
  }
  std::printf("%s: %zu products, %.1f MB of codes + scales, %d threads\n", shape.c_str(), products.size(), bytes / 1e6,
              kThreads);
  std::vector<double> ratio[kWays];
  for (int r = 0; r < rounds; ++r) {
    double ms[kWays];
    for (int w = 0; w < kWays; ++w) {
      std::vector<double> times;
      for (int call = 0; call < 15; ++call) {
        Step step;
        step.products = &products;
        step.way = static_cast<Way>(w);
        const auto t0 = std::chrono::steady_clock::now();
        std::thread other([&] { step.run(1); });
        step.run(0);
        other.join();
        times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(times.begin(), times.end());
      ms[w] = times[times.size() / 2];
      std::printf("round %d %-12s %7.3f ms %6.1f GB/s\n", r, kNames[w], ms[w], bytes / ms[w] / 1e6);
    }
    for (int w = 0; w < kWays; ++w) ratio[w].push_back(ms[kKernel] / ms[w]);
  }
  for (int w = 1; w < kWays; ++w) {
    std::sort(ratio[w].begin(), ratio[w].end());
    std::printf("%-12s x%.2f the kernel's speed (median of %d rounds; range %.2f-%.2f)\n", kNames[w],
                ratio[w][ratio[w].size() / 2], rounds, ratio[w].front(), ratio[w].back());
  }
  return 0;
}
