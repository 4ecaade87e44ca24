// snapvk run: generate text from a GGUF model, streaming to stdout, with a summary on stderr
// (or one JSON object with --json).
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <random>

#include <nlohmann/json.hpp>

#include "host/model/chat_template.h"
#include "host/model/model.h"
#include "host/pack/pack.h"
#include "host/report/files.h"
#include "host/session/generate.h"
#include "host/session/memory_model.h"
#include "host/session/sampler.h"
#include "host/session/session.h"
#include "runtime/error.h"
#include "tools/cli.h"

namespace snapvk::cli {

namespace {

struct RunOptions {
  std::string model, prompt, prompt_file, tokens_file, dump_selection;
  std::string pack;                   // --pack: continue from a pack's document (the prompt follows it, no BOS)
  bool kv_type_given = false;         // --kv-type(-k/-v) was given (with --pack it must match the pack's)
  bool chat = false;                  // --chat: the prompt is one user turn through the chat template
  std::string system, chat_template;  // --system, --chat-template
  SessionCli session;  // -c, -b, --kv-*
  int32_t n_predict = 128;
  SamplerParams sp;
  bool seed_set = false, json = false, profile = false, dry_run = false;
};

// {"prompt_len": L, "policy": ..., "window": W, "budget": C, "layers": [[[positions of head 0], ...], ...]}
void write_selection(const std::string& path, const Session& s, uint32_t L) {
  const KvPolicyOptions& kv = s.options().kv;
  nlohmann::ordered_json j;
  j["prompt_len"] = L, j["policy"] = kv_policy_name(kv.policy), j["window"] = kv.window;
  j["budget"] = kv.compresses() ? kv.budget_for(L) : L;
  j["layers"] = nlohmann::ordered_json::array();
  const ModelConfig& c = s.model().config();
  std::vector<uint32_t> all(L);  // a full cache keeps every position
  for (uint32_t p = 0; p < L; ++p) all[p] = p;
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    nlohmann::ordered_json& layer = j["layers"].emplace_back(nlohmann::ordered_json::array());
    for (uint32_t h = 0; h < c.n_head_kv; ++h) layer.push_back(s.selection().empty() ? all : s.selection()[l][h]);
  }
  write_file(path, j.dump() + "\n");
}

// --dry-run: what the memory model says this run needs, without running it; exit 1 if over budget.
int memory_check(const Model& model, SessionOptions so, uint32_t L, const Context& ctx) {
  const MemoryQuery q = memory_query(model, so, L);
  const MemoryEstimate e = estimate_memory(model.config(), model.weights().bytes, q);
  const uint64_t budget = ctx.memory().budget();
  const bool fits = (!budget || e.peak <= budget) && L <= q.n_ctx;
  nlohmann::ordered_json j;
  j["prompt_tokens"] = L, j["n_ctx"] = q.n_ctx, j["policy"] = kv_policy_name(so.kv.policy);
  j["options"] = options_json(so);
  j["weights"] = e.weights, j["activations"] = e.activations, j["kv_cache"] = e.kv_cache;
  j["kv_full_equivalent"] = e.kv_full_equivalent, j["prefill_transient"] = e.prefill_transient;
  j["peak"] = e.peak, j["budget"] = budget, j["fits"] = fits;
  std::printf("%s\n", j.dump().c_str());
  if (!fits)
    throw Error(ErrorKind::OutOfMemory, "does not fit: needs " + format_bytes(e.peak) +
                                            (budget ? " of a budget of " + format_bytes(budget) : std::string()) +
                                            (L > q.n_ctx ? " (prompt longer than the context)" : ""));
  return 0;
}

// The prompt's tokens: token ids from a file, the text with BOS as the vocabulary asks, or with
// --chat the text as one user turn (after --system) through the chat template, special tokens parsed.
std::vector<int32_t> prompt_tokens(const RunOptions& o, const Model& model, std::optional<ChatTemplate>& tmpl) {
  const Tokenizer& tok = model.tokenizer();
  if (!o.tokens_file.empty()) return parse_token_ids(read_prompt_file(o.tokens_file), "'" + o.tokens_file + "'");
  const std::string text = o.prompt_file.empty() ? o.prompt : read_prompt_file(o.prompt_file);
  if (!o.chat) return tok.encode(text, o.pack.empty());  // after a pack's document: no BOS
  tmpl = ChatTemplate::for_model(model.gguf(), tok, o.chat_template);
  std::vector<ChatMessage> messages;
  if (!o.system.empty()) messages.push_back({"system", o.system});
  messages.push_back({"user", text});
  return tok.encode(tmpl->render(messages, true), true, true);
}

// --chat, --system and --chat-template: checked before anything is loaded.
void check_chat_options(const RunOptions& o) {
  if (!o.chat && (!o.system.empty() || !o.chat_template.empty()))
    throw Error(ErrorKind::InvalidArgument, "--system and --chat-template need --chat");
  if (o.chat && !o.tokens_file.empty())
    throw Error(ErrorKind::InvalidArgument, "--chat takes the prompt as text (-p or -f), not --tokens-file");
  if (!o.pack.empty() && (o.chat || !o.dump_selection.empty() || o.dry_run))
    throw Error(ErrorKind::InvalidArgument,
                "--pack does not go with --chat (use snapvk chat --pack), --dump-kv-selection or --dry-run");
  if (!o.chat_template.empty() && !chat_format_from_name(o.chat_template))
    throw Error(ErrorKind::InvalidArgument,
                "unknown --chat-template '" + o.chat_template + "' (names: " + chat_format_names() + ")");
}

// The prompt as llama.cpp and llama2.c print it: SentencePiece's space before the first word dropped.
void echo_prompt(const Tokenizer& tok, const std::vector<int32_t>& prompt) {
  std::string shown = tok.decode(prompt);
  if (tok.vocab().add_space_prefix && !shown.empty() && shown[0] == ' ') shown.erase(0, 1);
  std::fputs(shown.c_str(), stdout);
  std::fflush(stdout);
}


// --profile: GPU time per kernel, and the dispatches of a decode step (prefill_dispatches: those
// before the first decode step; steps: the decode steps run).
void print_kernel_times(Session& session, uint64_t prefill_dispatches, uint32_t steps) {
  auto timings = session.stream().timings();
  double total = 0;
  for (const auto& t : timings) total += t.total_ms;
  if (steps > 0) {
    const double per_step = double(session.stream().dispatches() - prefill_dispatches) / steps;
    const uint32_t layers = session.model().config().n_layer;
    std::fprintf(stderr, "\ndecode: %.1f dispatches per step over %u layers (%.2f per layer, embedding and head included)\n",
                 per_step, layers, per_step / layers);
  }
  std::fprintf(stderr, "\n%-20s %8s %12s %8s\n", "kernel", "count", "total ms", "share");
  for (const auto& t : timings)
    std::fprintf(stderr, "%-20s %8llu %12.3f %7.1f%%\n", t.name.c_str(), static_cast<unsigned long long>(t.count),
                 t.total_ms, total > 0 ? 100.0 * t.total_ms / total : 0.0);
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// What a run did, for its report.
struct RunReport {
  const RunOptions& o;
  const Context& ctx;
  const Model& model;
  const Session& session;
  const std::vector<int32_t>& prompt;
  const std::optional<ChatTemplate>& tmpl;
  std::vector<int32_t> generated;  // the end-of-generation token included
  std::string text;
  double prefill_ms, decode_ms, load_ms;  // load_ms: the pack's (--pack)
  uint32_t decoded, held;                 // held: the pack's tokens before the prompt
  uint64_t seed;
  double prefill_tps() const { return prompt.size() / (prefill_ms / 1e3); }
  double decode_tps() const { return decoded ? decoded / (decode_ms / 1e3) : 0.0; }
};

void print_json(const RunReport& r) {
  const SessionOptions& so = r.session.options();
  const KvStats kv = r.session.kv_stats();
  nlohmann::ordered_json j;
  j["prompt_tokens"] = r.prompt;
  if (r.tmpl) j["chat_template"] = r.tmpl->name(), j["chat_template_source"] = r.tmpl->source();
  j["generated_tokens"] = r.generated;
  j["text"] = r.text;  // may end inside a UTF-8 character: such bytes become U+FFFD (dump below)
  if (!r.o.pack.empty()) j["pack_tokens"] = r.held;
  nlohmann::ordered_json& t = j["timings"];
  t["prefill_ms"] = r.prefill_ms, t["decode_ms"] = r.decode_ms;
  if (!r.o.pack.empty()) t["pack_load_ms"] = r.load_ms;
  t["prefill_tok_s"] = r.prefill_tps(), t["decode_tok_s"] = r.decode_tps();
  nlohmann::ordered_json& k = j["kv"];
  k["policy"] = kv_policy_name(so.kv.policy), k["type"] = kv_types_name(so.kv_types());
  k["options"] = options_json(so);
  k["bytes"] = kv.retained_bytes, k["full_bytes"] = kv.full_bytes, k["ratio"] = kv.ratio();
  k["allocated_bytes"] = kv.allocated_bytes, k["n_ctx"] = r.session.n_ctx(), k["n_past"] = r.session.n_past();
  k["score_ms"] = kv.score_ms, k["pool_ms"] = kv.pool_ms, k["select_ms"] = kv.select_ms;
  k["gather_ms"] = kv.gather_ms;
  j["peak_device_bytes"] = r.ctx.memory().peak();
  j["device"] = r.ctx.info().name;
  j["seed"] = r.seed;
  std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace).c_str());
}

void print_summary(const RunReport& r) {
  const SessionOptions& so = r.session.options();
  const KvStats kv = r.session.kv_stats();
  std::printf("\n");
  std::fprintf(stderr, "\n--- %s on %s\n", r.o.model.c_str(), r.ctx.info().name.c_str());
  if (!r.o.pack.empty()) std::fprintf(stderr, "pack: %u tokens loaded in %.1f ms\n", r.held, r.load_ms);
  std::fprintf(stderr, "prompt: %zu tokens, prefill %.1f ms (%.1f tok/s)\n", r.prompt.size(), r.prefill_ms,
               r.prefill_tps());
  std::fprintf(stderr, "decode: %zu tokens, %.1f ms (%.1f tok/s)\n", r.generated.size(), r.decode_ms, r.decode_tps());
  std::fprintf(stderr,
               "kv cache (%s, %s): %s retained for %u tokens, full-cache equivalent %s, ratio %.2fx; %s allocated\n",
               kv_policy_name(so.kv.policy), kv_types_name(so.kv_types()).c_str(), bytes_str(kv.retained_bytes).c_str(),
               r.session.n_past(), bytes_str(kv.full_bytes).c_str(), kv.ratio(), bytes_str(kv.allocated_bytes).c_str());
  if (so.kv.compresses())
    std::fprintf(stderr, "compression: score %.2f ms, pool %.2f ms, select %.2f ms, gather %.2f ms (GPU)\n",
                 kv.score_ms, kv.pool_ms, kv.select_ms, kv.gather_ms);
  std::fprintf(stderr, "peak device memory: %s (weights %s)\n", bytes_str(r.ctx.memory().peak()).c_str(),
               bytes_str(r.model.weights().bytes).c_str());
}

int run(const RunOptions& o, const Globals& g) {
  const int sources = !o.prompt.empty() + !o.prompt_file.empty() + !o.tokens_file.empty();
  if (sources != 1)
    throw Error(ErrorKind::InvalidArgument, "give exactly one of -p PROMPT, -f FILE or --tokens-file FILE");
  check_chat_options(o);
  SessionOptions so = session_options(o.session);
  so.profile = o.profile;
  so.keep_selection = !o.dump_selection.empty();
  const KvTypes kv_types = so.kv_types();
  SamplerParams sp = o.sp;
  if (!o.seed_set) sp.seed = std::random_device{}();
  if (g.check_only) return 0;

  // a pack is read and checked before the model is loaded: a bad one fails fast
  std::optional<Pack> pack;
  if (!o.pack.empty()) pack = read_pack(read_pack_file(o.pack), o.pack);
  Context ctx(context_options(g));
  Kernels kernels(ctx);
  Model model(kernels, o.model);
  const Tokenizer& tok = model.tokenizer();
  std::optional<ChatTemplate> tmpl;
  std::vector<int32_t> prompt = prompt_tokens(o, model, tmpl);
  if (prompt.empty()) throw Error(ErrorKind::InvalidArgument, "the prompt is empty");
  const uint32_t held = pack ? pack->state.n_past : 0;  // the pack's document comes first
  if (pack) {
    check_pack_model(*pack, model, o.pack);
    so = pack_session_options(*pack, so);
    if (o.kv_type_given) so.set_kv_types(kv_types);  // a different one is refused by load_pack
  }
  // Without -c the cache holds what this run needs: the prompt and the tokens to generate
  // (so a compressed prompt's savings are not spent on unused room).
  if (so.n_ctx == 0 && o.n_predict >= 0)
    so.n_ctx = std::min<uint64_t>(model.config().n_ctx_train, held + prompt.size() + uint64_t(o.n_predict));
  if (o.dry_run) return memory_check(model, so, uint32_t(prompt.size()), ctx);
  Session session(model, so);
  double load_ms = 0;
  if (pack) {
    const auto t0 = std::chrono::steady_clock::now();
    load_pack(session, *pack, o.pack);
    load_ms = ms_since(t0);
  }
  const uint64_t used = held + prompt.size();
  const uint32_t room = session.n_ctx() > used ? session.n_ctx() - uint32_t(used) : 0;
  if (used > session.n_ctx())
    throw Error(ErrorKind::InvalidArgument,
                "prompt of " + std::to_string(prompt.size()) + " tokens" +
                    (pack ? " after the pack's " + std::to_string(held) : std::string()) +
                    " is longer than the context (" + std::to_string(session.n_ctx()) + "); raise -c",
                opt::n_ctx);
  const uint32_t n_gen = o.n_predict < 0 ? room + 1 : std::min<uint32_t>(uint32_t(o.n_predict), room + 1);

  if (tmpl && !o.json) std::fprintf(stderr, "chat template: %s (%s)\n", tmpl->name(), tmpl->source().c_str());
  if (!o.json && !tmpl) echo_prompt(tok, prompt);
  Sampler sampler(sp);
  for (int32_t t : prompt) sampler.accept(t);
  auto t0 = std::chrono::steady_clock::now();
  auto logits = session.prefill(prompt);
  const double prefill_ms = ms_since(t0);
  const uint64_t prefill_dispatches = session.stream().dispatches();

  GenerateOptions go;
  go.max_tokens = n_gen;
  go.decode_last = false;  // nothing follows the last token
  if (tmpl) go.stop_tokens = tmpl->stop_tokens(tok);
  if (!o.json)
    go.on_text = [](std::string_view text) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    };
  GenerateResult gen;
  if (n_gen > 0) generate(session, sampler, logits, go, gen);
  RunReport r{o,        ctx,        model,       session, prompt,      tmpl, gen.tokens,
              gen.text, prefill_ms, gen.wall_ms, load_ms, gen.decoded, held, sp.seed};
  if (gen.stop == StopReason::EndOfGeneration) r.generated.push_back(gen.last_token);  // listed, as llama.cpp does
  if (!o.dump_selection.empty()) write_selection(o.dump_selection, session, uint32_t(prompt.size()));
  if (o.json)
    print_json(r);
  else
    print_summary(r);
  if (o.profile) print_kernel_times(session, prefill_dispatches, gen.decoded);
  return 0;
}

}  // namespace

// A prompt or token file (a pipe such as /dev/stdin too), read up to 256 MiB: more than the
// longest context needs, and a bound for a source that never ends (/dev/zero).
std::string read_prompt_file(const std::string& path) {
  constexpr size_t kMaxPromptFile = size_t{256} << 20;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw Error(ErrorKind::Io, "prompt file '" + path + "' is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorKind::Io, "cannot open prompt file '" + path + "'");
  std::string text;
  char chunk[1 << 16];
  while (in.read(chunk, sizeof chunk) || in.gcount() > 0) {
    text.append(chunk, size_t(in.gcount()));
    if (text.size() > kMaxPromptFile)
      throw Error(ErrorKind::InvalidArgument, "prompt file '" + path + "' is larger than 256 MiB");
  }
  if (in.bad()) throw Error(ErrorKind::Io, "cannot read prompt file '" + path + "'");
  return text;
}

std::vector<int32_t> parse_token_ids(std::string_view text, const std::string& what) {
  std::vector<int32_t> ids;
  size_t i = 0;
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; };
  while (i < text.size()) {
    if (space(text[i])) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < text.size() && !space(text[end])) ++end;
    const std::string_view w = text.substr(i, end - i);
    int64_t v = 0;
    bool ok = w.size() <= 10;  // so v cannot overflow
    for (size_t k = 0; ok && k < w.size(); ++k) {
      ok = w[k] >= '0' && w[k] <= '9';
      v = v * 10 + (w[k] - '0');
    }
    if (!ok || v > INT32_MAX) {
      const std::string shown(w.substr(0, 32));
      throw Error(ErrorKind::InvalidArgument,
                  what + ": '" + shown + (w.size() > 32 ? "...'" : "'") + " is not a token id");
    }
    ids.push_back(int32_t(v));
    i = end;
  }
  if (ids.empty()) throw Error(ErrorKind::InvalidArgument, what + " holds no token ids");
  return ids;
}

Runner add_run(CLI::App& app, const Globals& g) {
  auto o = std::make_shared<RunOptions>();
  app.add_option("-m,--model", o->model, "GGUF model file")->required();
  app.add_option("-p,--prompt", o->prompt, "Prompt text");
  app.add_option("-f,--file", o->prompt_file, "Read the prompt from a file");
  app.add_option("--tokens-file", o->tokens_file, "Prompt as whitespace-separated token ids (no BOS added)");
  app.add_option("--pack", o->pack,
                 "Continue from a pack (snapvk pack): its document is loaded, not prefilled; the prompt follows it");
  app.add_flag("--chat", o->chat, "The prompt is a user's message: render it through the model's chat template");
  app.add_option("--system", o->system, "With --chat: a system message before the user's");
  app.add_option(
      "--chat-template", o->chat_template,
      "With --chat: this template instead of the model's: chatml, llama3, gemma, mistral (llama2), phi3, ...");
  app.add_option("-n,--n-predict", o->n_predict, "Tokens to generate (-1: until the context is full)")
      ->capture_default_str();
  app.add_option(
      "-c,--ctx-size", o->session.so.n_ctx,
      "Positions the cache holds, prompt + generated (default: prompt + -n, or the model's context with -n -1)");
  add_sampler_options(app, o->sp, o->seed_set);
  add_session_options(app, o->session, {"n_ctx"});
  app.add_option("--dump-kv-selection", o->dump_selection,
                 "Write the retained prompt positions per layer and head as JSON");
  app.add_flag("--json", o->json, "Print one JSON object at the end instead of streaming");
  app.add_flag("--profile", o->profile, "Per-kernel GPU time after the run");
  app.add_flag("--dry-run", o->dry_run,
               "Print the memory this run needs (JSON) without running it; exit 1 if over --max-device-memory");
  const CLI::Option *kv_type = app.get_option("--kv-type"), *k = app.get_option("--kv-type-k"),
                    *v = app.get_option("--kv-type-v");
  return [o, &g, kv_type, k, v] {
    o->kv_type_given = kv_type->count() + k->count() + v->count() > 0;
    return run(*o, g);
  };
}

Runner add_tokenize(CLI::App& app, const Globals& g) {
  auto o = std::make_shared<std::tuple<std::string, std::string, bool, bool>>();
  app.add_option("-m,--model", std::get<0>(*o), "GGUF model (or vocab-only) file")->required();
  app.add_option("-p,--prompt", std::get<1>(*o), "Text to tokenize")->required();
  app.add_flag("--json", std::get<2>(*o), "Print a JSON array");
  app.add_flag("--no-bos", std::get<3>(*o), "Do not add BOS/EOS");
  return [o, &g] {
    if (g.check_only) return 0;
    GgufFile f = GgufFile::open(std::get<0>(*o));
    Tokenizer tok(vocab_from_gguf(f));
    auto ids = tok.encode(std::get<1>(*o), !std::get<3>(*o));
    if (std::get<2>(*o)) {
      std::printf("%s\n", nlohmann::json(ids).dump().c_str());
    } else {
      for (int32_t id : ids) std::printf("%6d -> '%s'\n", id, tok.token_to_piece(id).c_str());
    }
    return 0;
  };
}

}  // namespace snapvk::cli
