// chat.cpp: a small terminal chat on the C++ API (snapvk/snapvk.hpp). Each line you type is a
// user message: the conversation goes through the model's chat template (Session::prefill_chat
// appends only the new turn to the cache) and the model's answer streams back, ending at the
// template's end of turn; after each turn the live KV memory and compression ratio are shown. The
// first turn is compressed by the KV policy (SnapKV by default); later turns are appended after
// the compacted cache. Ctrl-C stops an answer, Ctrl-D (end of input) quits, "/reset" starts
// over. Works with piped input too:
//
//   printf 'Once upon a time, ...\nThen the dog said\n' | ./chat -m model.gguf --kv-budget 48 --kv-window 8
#include <snapvk/snapvk.hpp>

#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

namespace {

volatile std::sig_atomic_t g_busy = 0;  // a turn is running: Ctrl-C stops it
volatile std::sig_atomic_t g_interrupted = 0;

extern "C" void on_sigint(int) {
  if (!g_busy) {  // at the prompt: quit as usual
    std::signal(SIGINT, SIG_DFL);
    std::raise(SIGINT);
    return;
  }
  g_interrupted = 1;  // seen by the token and progress callbacks
}

struct Options {
  std::string model, policy = "snapkv", system, chat_template;
  uint32_t budget = 0, window = 0, n_ctx = 0, n_predict = 128;
  float ratio = 0.0f, temp = 0.8f;
  uint64_t seed = SNAPVK_SEED_RANDOM;
};

[[noreturn]] void usage(const char* argv0, int code) {
  std::fprintf(code ? stderr : stdout,
               "usage: %s -m MODEL.gguf [options]\n"
               "  --system TEXT    system message at the start of the conversation\n"
               "  --chat-template NAME  chatml, llama3, gemma, mistral, phi3 (default: the model's)\n"
               "  --kv-policy P    full, snapkv (default), pyramidkv, streamingllm, h2o, adakv\n"
               "  --kv-budget C    entries kept per KV head, window included\n"
               "  --kv-ratio r     budget as a share of the first prompt (default 0.5 without --kv-budget)\n"
               "  --kv-window W    observation window (default 32)\n"
               "  -c N             context positions (default: the model's, at most 4096)\n"
               "  -n N             tokens per answer at most (default 128)\n"
               "  --temp T         temperature, 0 for greedy (default 0.8)\n"
               "  --seed S         random seed (default: random)\n",
               argv0);
  std::exit(code);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "chat: %s needs a value\n", a.c_str());
        usage(argv[0], 2);
      }
      return argv[++i];
    };
    try {
      if (a == "-m" || a == "--model")
        o.model = value();
      else if (a == "--kv-policy")
        o.policy = value();
      else if (a == "--system")
        o.system = value();
      else if (a == "--chat-template")
        o.chat_template = value();
      else if (a == "--kv-budget")
        o.budget = uint32_t(std::stoul(value()));
      else if (a == "--kv-ratio")
        o.ratio = std::stof(value());
      else if (a == "--kv-window")
        o.window = uint32_t(std::stoul(value()));
      else if (a == "-c" || a == "--ctx-size")
        o.n_ctx = uint32_t(std::stoul(value()));
      else if (a == "-n" || a == "--n-predict")
        o.n_predict = uint32_t(std::stoul(value()));
      else if (a == "--temp")
        o.temp = std::stof(value());
      else if (a == "--seed")
        o.seed = std::stoull(value());
      else if (a == "-h" || a == "--help")
        usage(argv[0], 0);
      else {
        std::fprintf(stderr, "chat: unknown option %s\n", a.c_str());
        usage(argv[0], 2);
      }
    } catch (const std::logic_error&) {  // std::stoul and friends
      std::fprintf(stderr, "chat: bad value for %s\n", a.c_str());
      usage(argv[0], 2);
    }
  }
  if (o.model.empty()) usage(argv[0], 2);
  if (o.policy != "full" && o.budget == 0 && o.ratio == 0.0f) o.ratio = 0.5f;
  return o;
}

std::string bytes(uint64_t b) {
  char buf[32];
  if (b >= (1ull << 20))
    std::snprintf(buf, sizeof buf, "%.2f MiB", double(b) / double(1ull << 20));
  else
    std::snprintf(buf, sizeof buf, "%.1f KiB", double(b) / 1024.0);
  return buf;
}

void show_kv(const snapvk::Session& chat, const std::string& policy) {
  const snapvk::KvStats s = chat.kv_stats();
  std::printf("[kv %s: %s for %u tokens", policy.c_str(), bytes(s.retained_bytes).c_str(), s.n_past);
  if (s.prompt_len) std::printf(" (first %u compressed)", s.prompt_len);
  std::printf(", full cache %s, ratio %.2fx, allocated %s; device memory %s, peak %s]\n", bytes(s.full_bytes).c_str(),
              s.ratio, bytes(s.allocated_bytes).c_str(), bytes(s.device_bytes).c_str(),
              bytes(s.peak_device_bytes).c_str());
  std::fflush(stdout);
}

// One turn: the user's line joins the conversation, the answer streams back and joins it too.
void turn(snapvk::Session& chat, std::vector<snapvk::ChatMessage>& messages, const snapvk::ChatMessage& first,
          const std::string& line, const Options& o, const snapvk::SamplingParams& sp) {
  messages.push_back({"user", line});
  try {
    chat.prefill_chat(messages);
  } catch (const snapvk::Error& e) {
    if (e.cancelled()) {  // Ctrl-C during the prefill: the session is as before the turn
      messages.pop_back();
      std::printf("\n[stopped]\n");
      return;
    }
    if (e.status() != SNAPVK_INVALID_ARGUMENT || std::string(e.what()).find("context") == std::string::npos) throw;
    std::printf("[the context is full: starting a new conversation]\n");
    chat.reset();
    messages.assign(first.content.empty() ? 0 : 1, first);
    messages.push_back({"user", line});
    chat.prefill_chat(messages);
  }
  std::string answer;
  snapvk::GenerateResult r;
  try {
    r = chat.generate(
        o.n_predict,
        [&answer](int32_t, std::string_view piece) {
          answer += piece;
          std::fwrite(piece.data(), 1, piece.size(), stdout);
          std::fflush(stdout);
          return !g_interrupted;
        },
        sp);
  } catch (const snapvk::Error& e) {
    if (!e.cancelled()) throw;
  }
  messages.push_back({"assistant", answer});  // what entered the cache, as the next turn's history
  std::printf("\n");
  if (g_interrupted) std::printf("[stopped]\n");
  show_kv(chat, o.policy);
  if (r.stop_reason == SNAPVK_STOP_CONTEXT_FULL) {
    std::printf("[the context is full: starting a new conversation]\n");
    chat.reset();
    messages.assign(first.content.empty() ? 0 : 1, first);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  try {
    snapvk::Device device;
    snapvk::ModelOptions mo;
    mo.chat_template = o.chat_template.empty() ? nullptr : o.chat_template.c_str();
    snapvk::Model model(device, o.model, mo);
    snapvk::SessionOptions so;
    so.n_ctx = o.n_ctx;
    so.kv_policy_name = o.policy.c_str();
    so.kv_budget = o.budget;
    so.kv_ratio = o.ratio;
    so.kv_window = o.window;
    snapvk::Session chat(model, so, [](uint64_t, uint64_t) { return !g_interrupted; });
    snapvk::SamplingParams sp;
    sp.temperature = o.temp;
    sp.top_k = 40;
    sp.top_p = 0.95f;
    sp.min_p = 0.05f;
    sp.seed = o.seed;
    const snapvk::ChatMessage system{"system", o.system};
    std::vector<snapvk::ChatMessage> messages;
    if (!o.system.empty()) messages.push_back(system);

    const bool tty = isatty(STDIN_FILENO);
    std::signal(SIGINT, on_sigint);
    const snapvk::ChatTemplateInfo t = model.chat_template();
    std::fprintf(stderr, "chat: %s on %s, chat template %s (%s), kv policy %s. Ctrl-D quits, /reset starts over.\n",
                 model.info().name[0] ? model.info().name : o.model.c_str(), device.info().name, t.name, t.source,
                 o.policy.c_str());
    std::string line;
    for (;;) {
      if (tty) std::fputs("> ", stdout), std::fflush(stdout);
      if (!std::getline(std::cin, line)) break;  // end of input
      if (line.empty()) continue;
      if (!tty) std::printf("> %s\n", line.c_str());
      if (line == "/reset") {
        chat.reset();
        messages.assign(o.system.empty() ? 0 : 1, system);
        std::printf("[new conversation]\n");
        continue;
      }
      g_interrupted = 0;
      g_busy = 1;
      turn(chat, messages, system, line, o, sp);
      g_busy = 0;
    }
    if (tty) std::printf("\n");
    return 0;
  } catch (const snapvk::Error& e) {
    std::fprintf(stderr, "chat: %s (%s)\n", e.what(), snapvk_status_name(e.status()));
    return 1;
  }
}
