// seqedge_runner: run a seqedge ExecuTorch artifact outside Python.
//
//   seqedge_runner ARTIFACT (--prompt TEXT | --prompt-file PATH) [--chat] --max-new-tokens N [--threads N] [--timing]
//   seqedge_runner ARTIFACT --prompt TEXT [--chat] --encode      # print the prompt's token ids and exit
//   seqedge_runner ARTIFACT --prompt TEXT --score-file PATH      # teacher forcing: every step's logits (float32)
//   seqedge_runner ARTIFACT --prompts-from-stdin [--chat] --max-new-tokens N [--threads N] [--timing]
//                                                   # one prompt file's path per stdin line, the artifact loaded once
//
// Reads ARTIFACT/manifest.json (program file, longest prefill, tokenizer), loads the .pte with the
// ExecuTorch Module API, prefills the prompt's tokens, then decodes greedily with the explicit state
// (recurrent state, pos) carried between calls and attention KV caches held by the program (shared by
// its two methods), stopping at the model's end-of-sequence ids, and prints prompt + continuation to
// stdout (with --chat: the prompt goes through the chat template the exporter pre-rendered around it, and
// only the reply is printed). Byte-level models read bytes; a model with a tokenizer.json is tokenized in
// C++ by pytorch-tokenizers' HF tokenizer (built in with -DSEQEDGE_TOKENIZERS_SOURCE). With --timing, a
// warm-up prefill and two decode steps run first (the first call of each method packs its weights:
// `cold_prefill_ms`), then kTimedPrefills prefills of the prompt, each from a fresh state (their median is
// `prefill_ms`, as the Python benchmark's median of three; one sample swung by a third on a busy machine), the
// last going on to decode, and one JSON line of the timed run's figures goes to stderr (decode as steps / their
// total time, `decode_tok_s`, and as the median step, `decode_ms_p50`, as the Python benchmark reports both).
// With --score-file, the prompt's tokens go in one decode step at a time and the logits of every step are
// written to PATH (steps × vocab float32, little-endian): the same numbers on every build of the runner (x86-64,
// arm64 under emulation) are what the cross-build tests compare. With --prompts-from-stdin, each line read from
// stdin names a prompt file, generated from (and timed, with --timing) as --prompt-file would be, in turn, with
// the one engine loaded at the start and a fresh sequence for each; the output of each is flushed before the next
// line is read, so a caller can alternate the runner with another system turn by turn
// (benchmarks/runner_parity.py --lockstep). EOF ends it.
// The work is seqedge::Engine (engine/seqedge_engine.h), the class an Android (JNI), iOS or embedded-Linux app
// calls; seqedge's custom-op kernels are linked in (libseqedge_kernels, libseqedge_llm_kernels).

#include "seqedge_engine.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

constexpr int kTimedPrefills = 3;  // seqedge.bench.measure.prefill_times' repeats

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

struct Args {
  std::string artifact, prompt = "def ", score_file;
  int max_new_tokens = 64, threads = 0;
  bool timing = false, chat = false, encode = false, from_stdin = false;
};

int to_int(const std::string& flag, const std::string& value) {
  try {
    size_t used = 0;
    const int v = std::stoi(value, &used);
    if (used == value.size() && v >= 0) return v;
  } catch (const std::exception&) {
  }
  fail(flag + " takes a whole number >= 0, not '" + value + "'");
}

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
    else if (s == "--max-new-tokens") a.max_new_tokens = to_int(s, next());
    else if (s == "--threads") a.threads = to_int(s, next());
    else if (s == "--score-file") a.score_file = next();
    else if (s == "--timing") a.timing = true;
    else if (s == "--chat") a.chat = true;
    else if (s == "--encode") a.encode = true;
    else if (s == "--prompts-from-stdin") a.from_stdin = true;
    else if (s == "-h" || s == "--help") {
      std::cout << "usage: seqedge_runner ARTIFACT (--prompt TEXT | --prompt-file PATH) [--chat] "
                   "--max-new-tokens N [--threads N] [--timing] [--encode] [--score-file PATH]\n"
                   "       seqedge_runner ARTIFACT --prompts-from-stdin [--chat] --max-new-tokens N [--threads N] "
                   "[--timing]\n";
      std::exit(0);
    } else if (a.artifact.empty()) a.artifact = s;
    else fail("unexpected argument " + s);
  }
  if (a.artifact.empty()) fail("no artifact folder given (usage: seqedge_runner ARTIFACT --prompt TEXT ...)");
  if (a.prompt.empty()) fail("the prompt is empty");
  return a;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// The median of `xs` (the mean of the middle two for an even count; 0 for none), as Python's statistics.median.
double median(std::vector<double> xs) {
  if (xs.empty()) return 0.0;
  std::sort(xs.begin(), xs.end());
  const size_t n = xs.size();
  return n % 2 ? xs[n / 2] : (xs[n / 2 - 1] + xs[n / 2]) / 2;
}

// One prompt, as a sequence of its own (the state the last prompt left is forgotten first): encoded, prefilled
// and continued greedily; prompt + continuation to stdout, flushed, and with --timing the warm-up, the timed
// prefills and the timing line on stderr (`cold_prefill_ms` is the first call's only for an engine's first prompt).
void generate(seqedge::Engine& engine, const Args& args, const std::string& text) {
  engine.reset();
  const std::vector<int64_t> prompt = engine.encode(text, args.chat);
  if (prompt.empty()) fail("the prompt encodes to no tokens");
  double cold_prefill_ms = -1;
  std::vector<double> prefill_runs;
  if (args.timing) {  // as the Python benchmark does: a warm-up prefill and 2 decode steps first, then
    auto tc = std::chrono::steady_clock::now();  // kTimedPrefills prefills from a fresh state, their median
    int64_t t = engine.prefill(prompt);
    cold_prefill_ms = ms_since(tc);
    for (int i = 0; i < 2; ++i) t = engine.decode(t);
    for (int i = 0; i + 1 < kTimedPrefills; ++i) {
      engine.reset();
      auto tp = std::chrono::steady_clock::now();
      engine.prefill(prompt);
      prefill_runs.push_back(ms_since(tp));
    }
    engine.reset();
  }
  auto t0 = std::chrono::steady_clock::now();
  int64_t next = engine.prefill(prompt);  // the last timed prefill: generation goes on from it
  prefill_runs.push_back(ms_since(t0));
  const double prefill_ms = median(prefill_runs);
  std::vector<double> step_ms;
  std::string generated;
  int64_t prev = prompt.back();
  for (int i = 0; i < args.max_new_tokens; ++i) {
    if (engine.is_eos(next)) break;
    generated += engine.piece(prev, next);
    prev = next;
    if (i + 1 == args.max_new_tokens) break;
    auto ts = std::chrono::steady_clock::now();
    next = engine.decode(next);
    step_ms.push_back(ms_since(ts));
  }
  std::cout << (args.chat ? "" : text) << engine.text(generated) << "\n" << std::flush;
  if (args.timing) {
    double total = 0;
    for (double s : step_ms) total += s;
    std::fprintf(stderr, "{\"prompt_tokens\": %zu, \"prefill_ms\": %.3f, \"prefill_runs\": %zu, "
                 "\"cold_prefill_ms\": %.3f, \"decode_steps\": %zu, \"decode_ms_total\": %.3f, "
                 "\"decode_tok_s\": %.2f, \"decode_ms_p50\": %.3f}\n", prompt.size(), prefill_ms,
                 prefill_runs.size(), cold_prefill_ms, step_ms.size(), total,
                 step_ms.empty() ? 0.0 : 1000.0 * step_ms.size() / total, median(step_ms));
  }
}

int run(const Args& args) {
  if (args.encode) {  // the prompt's ids, for checking a tokenizer against the Python one
    seqedge::Engine engine(args.artifact, args.threads);
    const char* sep = "";
    for (int64_t id : engine.encode(args.prompt, args.chat)) std::cout << sep << id, sep = " ";
    std::cout << "\n";
    return 0;
  }
  seqedge::Engine engine(args.artifact, args.threads);
  if (!args.score_file.empty()) {
    const std::vector<float> rows = engine.score(engine.encode(args.prompt, args.chat));
    std::ofstream out(args.score_file, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(rows.data()), std::streamsize(rows.size() * sizeof(float)));
    if (!out) fail("cannot write " + args.score_file);
    return 0;
  }
  if (args.from_stdin) {
    for (std::string path; std::getline(std::cin, path);) {
      if (!path.empty()) generate(engine, args, read_file(path));
    }
    return 0;
  }
  generate(engine, args, args.prompt);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse(argc, argv);
  try {
    return run(args);
  } catch (const seqedge::Error& e) {
    fail(e.what());
  }
}
