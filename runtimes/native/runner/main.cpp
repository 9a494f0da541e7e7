// seqedge_runner: run a seqedge ExecuTorch artifact outside Python.
//
//   seqedge_runner ARTIFACT (--prompt TEXT | --prompt-file PATH) --max-new-tokens N [--threads N] [--timing]
//
// Reads ARTIFACT/manifest.json (program file, longest prefill), loads the .pte with the ExecuTorch
// Module API, prefills the prompt's bytes, then decodes greedily with the explicit state (recurrent
// state, pos) carried between calls and attention KV caches held by the program (shared by its two
// methods), and prints prompt + continuation to stdout. With --timing, one JSON line of timings goes to
// stderr. This is the code an Android (JNI), iOS or embedded-Linux app calls; seqedge's custom-op
// kernels are linked in (libseqedge_kernels, libseqedge_llm_kernels).

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#if __has_include(<executorch/extension/threadpool/threadpool.h>)
#include <executorch/extension/threadpool/threadpool.h>
#define SEQEDGE_HAVE_THREADPOOL 1
#endif

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

using executorch::aten::ScalarType;
using executorch::extension::Module;
using executorch::extension::TensorPtr;
using executorch::runtime::EValue;

namespace {

[[noreturn]] void fail(const std::string& message) {
  std::cerr << "seqedge_runner: error: " << message << "\n";
  std::exit(2);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The manifest is seqedge's own JSON: find a key's string or integer value (first occurrence at or
// after `from`, a position found by an enclosing key).
std::string json_string(const std::string& json, const std::string& key, size_t from = 0) {
  auto k = json.find("\"" + key + "\":", from);
  if (k == std::string::npos) return "";
  auto q1 = json.find('"', json.find(':', k) + 1);
  auto q2 = json.find('"', q1 + 1);
  return json.substr(q1 + 1, q2 - q1 - 1);
}

long json_int(const std::string& json, const std::string& key, long fallback) {
  auto k = json.find("\"" + key + "\":");
  if (k == std::string::npos) return fallback;
  auto c = json.find(':', k) + 1;
  while (c < json.size() && json[c] == ' ') ++c;
  if (c >= json.size() || !(isdigit(json[c]) || json[c] == '-')) return fallback;
  return std::stol(json.substr(c));
}

struct Args {
  std::string artifact, prompt = "def ";
  int max_new_tokens = 64, threads = 0;
  bool timing = false;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) fail("missing value after " + s);
      return argv[++i];
    };
    if (s == "--prompt") a.prompt = next();
    else if (s == "--prompt-file") a.prompt = read_file(next());
    else if (s == "--max-new-tokens") a.max_new_tokens = std::stoi(next());
    else if (s == "--threads") a.threads = std::stoi(next());
    else if (s == "--timing") a.timing = true;
    else if (s == "-h" || s == "--help") {
      std::cout << "usage: seqedge_runner ARTIFACT (--prompt TEXT | --prompt-file PATH) --max-new-tokens N "
                   "[--threads N] [--timing]\n";
      std::exit(0);
    } else if (a.artifact.empty()) a.artifact = s;
    else fail("unexpected argument " + s);
  }
  if (a.artifact.empty()) fail("no artifact folder given (usage: seqedge_runner ARTIFACT --prompt TEXT ...)");
  if (a.prompt.empty()) fail("the prompt is empty");
  return a;
}

// One state tensor: its bytes live here between calls.
struct StateTensor {
  std::vector<executorch::aten::SizesType> sizes;
  ScalarType dtype;
  std::vector<uint8_t> data;
};

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  Args args = parse(argc, argv);
  const std::string manifest = read_file(args.artifact + "/manifest.json");
  if (json_string(manifest, "format") != "executorch") fail(args.artifact + " is not an ExecuTorch artifact");
  std::string program = json_string(manifest, "prefill", manifest.find("\"graphs\":"));
  program = program.substr(0, program.find('#'));
  const long max_prefill = json_int(manifest, "max_prefill_len", 1 << 30);
#ifdef SEQEDGE_HAVE_THREADPOOL
  if (args.threads > 0) executorch::extension::threadpool::get_threadpool()->_unsafe_reset_threadpool(args.threads);
#endif

  // share_memory_arenas: prefill and decode see the same program-held state (attention KV caches)
  Module module(args.artifact + "/" + program, Module::LoadMode::File, nullptr, nullptr, nullptr, true);
  for (const char* m : {"prefill", "decode"}) {
    if (module.load_method(m) != executorch::runtime::Error::Ok) fail(std::string("cannot load method ") + m + " of " + program);
  }
  auto meta = module.method_meta("decode");
  if (!meta.ok()) fail("no method metadata");
  std::vector<StateTensor> state;
  for (size_t i = 1; i < meta->num_inputs(); ++i) {
    auto tm = meta->input_tensor_meta(i);
    StateTensor s;
    s.dtype = tm->scalar_type();
    size_t numel = 1;
    for (auto d : tm->sizes()) {
      s.sizes.push_back(d);
      numel *= d;
    }
    s.data.assign(numel * executorch::runtime::elementSize(s.dtype), 0);
    state.push_back(std::move(s));
  }

  auto run = [&](const char* method, std::vector<int64_t>& tokens) -> int {
    std::vector<EValue> inputs;
    std::vector<TensorPtr> keep;
    keep.push_back(executorch::extension::from_blob(tokens.data(), {1, (int)tokens.size()}, ScalarType::Long));
    for (auto& s : state) keep.push_back(executorch::extension::from_blob(s.data.data(), s.sizes, s.dtype));
    for (auto& t : keep) inputs.emplace_back(*t);
    auto out = module.execute(method, inputs);
    if (!out.ok()) fail(std::string("executing ") + method + " failed (error " + std::to_string((int)out.error()) + ")");
    const auto& logits = (*out)[0].toTensor();
    for (size_t i = 0; i < state.size(); ++i) {  // carry the new state (outputs are owned by the method)
      const auto& t = (*out)[i + 1].toTensor();
      std::memcpy(state[i].data.data(), t.const_data_ptr(), state[i].data.size());
    }
    const float* p = logits.const_data_ptr<float>();
    const int vocab = logits.size(logits.dim() - 1);
    return int(std::max_element(p, p + vocab) - p);
  };

  std::vector<int64_t> prompt(args.prompt.begin(), args.prompt.end());
  for (auto& t : prompt) t &= 0xff;
  std::string generated;
  auto t0 = std::chrono::steady_clock::now();
  int next = 0;
  for (size_t start = 0; start < prompt.size(); start += max_prefill) {  // chunk prompts beyond the maximum
    std::vector<int64_t> chunk(prompt.begin() + start, prompt.begin() + std::min(prompt.size(), start + max_prefill));
    next = run(chunk.size() == 1 ? "decode" : "prefill", chunk);
  }
  const double prefill_ms = ms_since(t0);
  std::vector<double> step_ms;
  for (int i = 0; i < args.max_new_tokens; ++i) {
    generated.push_back(char(next));
    if (i + 1 == args.max_new_tokens) break;
    std::vector<int64_t> tok{next};
    auto ts = std::chrono::steady_clock::now();
    next = run("decode", tok);
    step_ms.push_back(ms_since(ts));
  }
  std::cout << args.prompt << generated << "\n";
  if (args.timing) {
    double total = 0;
    for (double s : step_ms) total += s;
    std::fprintf(stderr, "{\"prompt_tokens\": %zu, \"prefill_ms\": %.3f, \"decode_steps\": %zu, \"decode_ms_total\": %.3f, "
                 "\"decode_tok_s\": %.2f}\n", prompt.size(), prefill_ms, step_ms.size(), total,
                 step_ms.empty() ? 0.0 : 1000.0 * step_ms.size() / total);
  }
  return 0;
}
