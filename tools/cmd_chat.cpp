// snapvk chat: an interactive chat in the terminal (or over a pipe). Each line read from stdin is a
// user turn, rendered through the model's chat template and appended to the session's cache (only
// the new turn's text: the conversation is never prefilled again); the answer streams to stdout,
// and the live KV memory follows each turn on stderr. Ctrl-C stops an answer; at the prompt it
// quits, as end of input does. "/reset" starts a new conversation.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <random>

#include "host/model/chat_template.h"
#include "host/model/model.h"
#include "host/pack/pack.h"
#include "host/session/endless.h"
#include "host/session/generate.h"
#include "host/session/sampler.h"
#include "host/session/session.h"
#include "runtime/error.h"
#include "tools/cli.h"

namespace snapvk::cli {

namespace {

struct ChatOptions {
  std::string model, system, chat_template;
  std::string pack;  // --pack: the conversation follows a pack's document
  SessionCli session;  // -c, -b, --kv-*
  int32_t n_predict = 512;
  SamplerParams sp;
  bool seed_set = false;
};

std::atomic<bool> g_busy{false};  // an answer (prefill or generation) is running
std::atomic<bool> g_stop{false};  // Ctrl-C during an answer: stop it

void on_sigint(int) {
  if (!g_busy.load()) _exit(130);  // at the prompt: quit
  g_stop.store(true);
}

class TerminalChat {
 public:
  TerminalChat(const ChatOptions& o, const Globals& g, SessionOptions so, bool endless)
      : o_(o),
        ctx_(context_options(g)),
        kernels_(ctx_),
        model_(kernels_, o.model),
        tmpl_(ChatTemplate::for_model(model_.gguf(), model_.tokenizer(), o.chat_template)),
        pack_(o.pack.empty() ? std::optional<Pack>() : read_pack(read_pack_file(o.pack), o.pack)),
        endless_(endless ? std::make_unique<EndlessChat>(model_, session_options(so, true)) : nullptr),
        plain_(endless ? nullptr : std::make_unique<Session>(model_, session_options(so, false))),
        session_(endless_ ? endless_->session() : *plain_),
        policy_(kv_policy_name(session_.options().kv.policy)) {
    if (!o.system.empty()) system_ = {{"system", o.system}};
    messages_ = system_;
    if (pack_) load_pack(session_, *pack_, o_.pack);
  }

  int loop() {
    const bool tty = isatty(STDIN_FILENO);
    std::fprintf(stderr, "snapvk chat: %s on %s; chat template %s (%s); kv policy %s\n", o_.model.c_str(),
                 ctx_.info().name.c_str(), tmpl_.name(), tmpl_.source().c_str(), policy_.c_str());
    if (pack_) std::fprintf(stderr, "pack %s: %u tokens of document loaded\n", o_.pack.c_str(), pack_->state.n_past);
    if (endless_)
      std::fprintf(stderr, "endless chat: the cache keeps %u entries per head plus the current turn\n",
                   session_.options().kv.budget);
    std::fprintf(stderr, "/reset starts over, Ctrl-C stops an answer, Ctrl-D (end of input) quits\n");
    std::string line;
    for (;;) {
      if (tty) std::fputs("> ", stdout), std::fflush(stdout);
      if (!std::getline(std::cin, line)) break;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty()) continue;
      if (line == "/reset") {
        start_over();
        std::fprintf(stderr, "[new conversation]\n");
        continue;
      }
      answer(line);
    }
    if (tty) std::fputs("\n", stdout);
    return 0;
  }

 private:
  // With a pack, an endless chat keeps its own policy and budget (the pack's cache is compacted to
  // it at the first turn's end); otherwise the pack's policy describes the cache.
  SessionOptions session_options(SessionOptions so, bool endless) const {
    if (pack_ && endless)
      so.set_kv_types(pack_->kv_types);
    else if (pack_)
      so = pack_session_options(*pack_, so);
    so.on_progress = [](uint64_t, uint64_t) { return !g_stop.load(); };
    return so;
  }

  void start_over() {
    session_.reset();
    if (pack_) load_pack(session_, *pack_, o_.pack);  // a new conversation about the same document
    history_.clear();
    messages_ = system_;
  }

  // The tokens of the new turn's text, starting over when they do not fit what is left.
  std::vector<int32_t> turn_tokens(ChatHistory& next) {
    const Tokenizer& tok = model_.tokenizer();
    auto tokens = tok.encode(next.next(tmpl_, messages_, true), session_.n_past() == 0, true);
    if (tokens.size() < session_.free_rows()) return tokens;
    std::fprintf(stderr, "[the context is full: starting a new conversation]\n");
    const ChatMessage user = messages_.back();
    start_over();
    messages_.push_back(user);
    next = history_;
    tokens = tok.encode(next.next(tmpl_, messages_, true), session_.n_past() == 0, true);
    if (tokens.size() >= session_.free_rows())
      throw Error(ErrorKind::InvalidArgument, "the turn of " + std::to_string(tokens.size()) +
                                                  " tokens does not fit the context (" +
                                                  std::to_string(session_.n_ctx()) + "); raise -c");
    return tokens;
  }

  void answer(const std::string& line) {
    messages_.push_back({"user", line});
    g_stop.store(false);
    g_busy.store(true);
    try {
      ChatHistory next = history_;
      const std::vector<int32_t> tokens = turn_tokens(next);
      std::span<const float> logits = session_.prefill(tokens);
      history_ = next;
      generate_answer(logits, tokens);
    } catch (const Cancelled&) {
      messages_.pop_back();  // the session is as before the turn
      std::fprintf(stderr, "[stopped]\n");
    } catch (const Error& e) {
      messages_.pop_back();
      std::fprintf(stderr, "snapvk: error: %s\n", e.what());
    }
    g_busy.store(false);
    g_stop.store(false);
  }

  void generate_answer(std::span<const float> logits, const std::vector<int32_t>& prompt) {
    Sampler sampler(o_.sp);
    for (int32_t t : prompt) sampler.accept(t);
    GenerateOptions go;
    go.max_tokens = o_.n_predict > 0 ? uint32_t(o_.n_predict) : 0;
    go.stop_tokens = tmpl_.stop_tokens(model_.tokenizer());
    go.cancel = &g_stop;
    go.on_text = [](std::string_view text) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    };
    GenerateResult gen;
    generate(session_, sampler, logits, go, gen);
    history_.generated(gen.text);
    messages_.push_back({"assistant", gen.text});
    const bool compacted = endless_ && endless_->end_turn();  // an endless chat over its budget compacts here
    std::fputs("\n", stdout);
    std::fflush(stdout);
    if (gen.stop == StopReason::Cancelled) std::fprintf(stderr, "[stopped]\n");
    show_kv(gen, compacted);
  }

  void show_kv(const GenerateResult& gen, bool compacted) {
    const KvStats kv = session_.kv_stats();
    const uint32_t compressed = session_.cache().compacted_len();
    const std::string first = compressed ? " (first " + std::to_string(compressed) + " compressed)" : "";
    std::fprintf(stderr, "[kv %s: %s retained for %u tokens%s, full cache %s, ratio %.2fx; answer %zu tokens, %s%s]\n",
                 policy_.c_str(), bytes_str(kv.retained_bytes).c_str(), session_.n_past(), first.c_str(),
                 bytes_str(kv.full_bytes).c_str(), kv.ratio(), gen.tokens.size(), stop_reason_name(gen.stop),
                 compacted ? "; compacted to the budget" : "");
  }

  const ChatOptions& o_;
  Context ctx_;
  Kernels kernels_;
  Model model_;
  ChatTemplate tmpl_;
  std::optional<Pack> pack_;
  std::unique_ptr<EndlessChat> endless_;  // --kv-budget with a policy that compacts again
  std::unique_ptr<Session> plain_;        // otherwise
  Session& session_;                      // the conversation's: endless_'s or plain_
  std::string policy_;
  std::vector<ChatMessage> system_, messages_;
  ChatHistory history_;
};

int chat(const ChatOptions& o, const Globals& g) {
  if (!o.chat_template.empty() && !chat_format_from_name(o.chat_template))
    throw Error(ErrorKind::InvalidArgument,
                "unknown --chat-template '" + o.chat_template + "' (names: " + chat_format_names() + ")");
  SessionOptions so = session_options(o.session);
  // a budget keeps a conversation of any length within it (docs/packs.md, endless chat); h2o and
  // adakv compress the first prompt only, as before
  const bool endless = compacts_again(so.kv.policy) && so.kv.budget > 0;
  if (g.check_only) return 0;
  ChatOptions opts = o;
  if (!opts.seed_set) opts.sp.seed = std::random_device{}();
  TerminalChat chat(opts, g, so, endless);
  struct sigaction sa = {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  const int rc = chat.loop();
  signal(SIGINT, SIG_DFL);
  return rc;
}

}  // namespace

Runner add_chat(CLI::App& app, const Globals& g) {
  auto o = std::make_shared<ChatOptions>();
  app.add_option("-m,--model", o->model, "GGUF model file (an instruct model)")->required();
  app.add_option("--system", o->system, "System message at the start of the conversation");
  app.add_option("--chat-template", o->chat_template,
                 "Chat template instead of the model's: chatml, llama3, gemma, mistral (llama2), phi3, ...");
  app.add_option("-n,--n-predict", o->n_predict, "Tokens per answer at most (<= 0: until the context is full)")
      ->capture_default_str();
  add_sampler_options(app, o->sp, o->seed_set);
  add_session_options(app, o->session);
  app.add_option("--pack", o->pack, "Chat about a pack's document (snapvk pack): loaded, not prefilled");
  return [o, &g] { return chat(*o, g); };
}

}  // namespace snapvk::cli
