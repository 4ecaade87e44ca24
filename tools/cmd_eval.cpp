// snapvk eval TASK: the fidelity suite's retrieval grids per KV policy (host/report/needle.h,
// eval_tasks.h); snapvk eval suite: every task and perplexity, summed up (host/report/suite.h);
// snapvk perplexity: llama.cpp-style perplexity over a text, per KV policy (perplexity.h).
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "host/model/model.h"
#include "host/report/needle.h"
#include "host/report/perplexity.h"
#include "host/report/suite.h"
#include "host/report/texts.h"
#include "runtime/error.h"
#include "tools/cli.h"
#include "tools/report_cli.h"

namespace snapvk::cli {

namespace {

constexpr const char* kSuitePolicies = "full,snapkv,pyramidkv,streamingllm,h2o,adakv";
constexpr const char* kSuiteText = "gpl-3.0";

// Options every retrieval task and the suite share.
struct EvalCli {
  std::string model, contexts, depths = "0,25,50,75,100", policies = "full,snapkv", budgets, out, kv_types = "f16";
  SessionCli session;  // -b, --kv-* (--kv-policy and --kv-budget as lists)
  uint32_t extra = 4;
  uint64_t seed = 1;
  bool json = false;
  // the suite only
  std::string tasks = "all", text = kSuiteText;
  uint32_t ppl_ctx = 1024, ppl_chunks = 4;
};

std::vector<uint32_t> parse_depths(const std::string& list) {
  std::vector<uint32_t> out;
  for (const std::string& d : split_items(list)) {
    size_t used = 0;
    long v = -1;
    try {
      v = std::stol(d, &used);
    } catch (...) {
      used = 0;
    }
    if (used != d.size() || v < 0 || v > 100)
      throw Error(ErrorKind::InvalidArgument, "--depths: '" + d + "' is not a percentage from 0 to 100");
    out.push_back(uint32_t(v));
  }
  return out;
}

std::vector<ProfileSpec> specs_of(const EvalCli& o) {
  std::string budgets = o.budgets;
  if (budgets.empty() && !(o.session.so.kv.ratio > 0)) budgets = "256";
  auto specs = make_specs(o.session, o.policies, budgets, true, o.kv_types);
  if (specs.empty()) throw Error(ErrorKind::InvalidArgument, "no KV policies to evaluate (--kv-policy)");
  return specs;
}

int eval_task(EvalTask task, const EvalCli& o, const Globals& g) {
  NeedleOptions no;
  no.task = task;
  no.n_batch = o.session.so.n_batch;
  no.extra_tokens = o.extra;
  no.seed = o.seed;
  no.specs = specs_of(o);
  no.depths = parse_depths(o.depths);
  if (g.check_only) {
    if (!o.contexts.empty()) parse_token_counts(o.contexts, "--contexts");
    return 0;
  }
  ProgressBar bar(!o.json, std::string("eval ") + eval_task_name(task) + " " + o.model + ": " +
                               std::to_string(no.specs.size()) + " KV configurations");
  Context ctx(context_options(g));
  Kernels kernels(ctx);
  Model model(kernels, o.model);
  no.contexts = !o.contexts.empty() ? parse_token_counts(o.contexts, "--contexts")
                                    : default_contexts("1k,2k,4k", model.config().n_ctx_train);
  no.on_progress = bar.callback();
  NeedleReport r = run_needle(model, no);
  bar.finish();
  const auto paths = write_needle_files(r, o.out.empty() ? std::string(eval_task_name(task)) + "-out" : o.out);
  if (o.json) {
    std::printf("%s\n", needle_json(r).c_str());
  } else {
    std::fputs(needle_grid(r).c_str(), stdout);
    std::fflush(stdout);
    std::fprintf(stderr, "%s grid took %.1f s\n", eval_task_name(task), r.total_s);
    print_files(paths);
  }
  return 0;
}

// A shipped text by name, or a file's contents.
std::string read_text(const std::string& name_or_path, std::string& label) {
  for (const auto& t : shipped_texts())
    if (t.name == name_or_path) {
      label = std::string(t.name) + " (built in)";
      return std::string(t.text);
    }
  std::ifstream in(name_or_path, std::ios::binary);
  if (!in) {
    std::string names;
    for (const auto& t : shipped_texts()) names += (names.empty() ? "" : ", ") + std::string(t.name);
    throw Error(ErrorKind::Io,
                "cannot read the text '" + name_or_path + "' (a file, or a built-in text: " + names + ")");
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  label = name_or_path;
  return ss.str();
}

std::vector<EvalTask> parse_tasks(const std::string& list) {
  if (list == "all") return all_eval_tasks();
  std::vector<EvalTask> out;
  for (const std::string& n : split_items(list)) {
    const auto t = parse_eval_task(n);
    if (!t) {
      std::string names;
      for (EvalTask x : all_eval_tasks()) names += (names.empty() ? "" : ", ") + std::string(eval_task_name(x));
      throw Error(ErrorKind::InvalidArgument, "--tasks: unknown task '" + n + "' (" + names + ", all)");
    }
    out.push_back(*t);
  }
  return out;
}

int eval_suite(const EvalCli& o, const Globals& g) {
  SuiteOptions so;
  so.tasks = parse_tasks(o.tasks);
  so.n_batch = o.session.so.n_batch;
  so.seed = o.seed;
  so.specs = specs_of(o);
  so.depths = parse_depths(o.depths);
  so.ppl_ctx = o.ppl_ctx, so.ppl_chunks = o.ppl_chunks;
  if (g.check_only) {
    if (!o.contexts.empty()) parse_token_counts(o.contexts, "--contexts");
    return 0;
  }
  ProgressBar bar(!o.json, "eval suite " + o.model + ": " + std::to_string(so.tasks.size()) + " tasks x " +
                               std::to_string(so.specs.size()) + " KV configurations");
  Context ctx(context_options(g));
  Kernels kernels(ctx);
  Model model(kernels, o.model);
  so.contexts = !o.contexts.empty() ? parse_token_counts(o.contexts, "--contexts")
                                    : default_contexts("1k,2k", model.config().n_ctx_train);
  if (!o.text.empty() && o.text != "none") so.text_tokens = perplexity_tokens(model, read_text(o.text, so.text_name));
  // Refused before the tasks run rather than after them (run_perplexity checks it again).
  if (!so.text_tokens.empty() && so.text_tokens.size() < so.ppl_ctx)
    throw Error(ErrorKind::InvalidArgument, "--ppl-ctx " + std::to_string(so.ppl_ctx) + ": the text '" + so.text_name +
                                                "' has " + std::to_string(so.text_tokens.size()) +
                                                " tokens, fewer than one chunk (use a longer text or a smaller --ppl-ctx)");
  so.on_progress = bar.callback();
  const std::string out = o.out.empty() ? "suite-out" : o.out;
  so.on_task = [&](const NeedleReport& t) { write_needle_files(t, out); };  // kept if a later part fails
  SuiteReport r = run_suite(model, so);
  bar.finish();
  const auto paths = write_suite_files(r, out);
  if (o.json) {
    std::printf("%s\n", suite_json(r).c_str());
  } else {
    std::fputs(suite_table(r).c_str(), stdout);
    std::fflush(stdout);
    std::fprintf(stderr, "suite took %.1f s\n", r.total_s);
    print_files(paths);
  }
  return 0;
}

void add_eval_options(CLI::App& sub, EvalCli& o, const std::string& default_depths, const std::string& out_help) {
  sub.fallthrough();
  sub.add_option("-m,--model", o.model, "GGUF model file")->required();
  sub.add_option("--contexts", o.contexts, "Prompt lengths in tokens, comma-separated, k = 1024");
  o.depths = default_depths;
  sub.add_option("--depths", o.depths, "Where the answer sits, percent of the context, comma-separated")
      ->capture_default_str();
  add_kv_list_options(sub, o.session, o.policies, o.budgets, o.kv_types, "KV policies, comma-separated (full included if listed)",
                      "Entries kept per KV head (C), comma-separated for several (default: 256)");
  sub.add_option("--extra-tokens", o.extra, "Tokens generated beyond the answer's own")->capture_default_str();
  sub.add_option("--seed", o.seed, "Picks the hidden values")->capture_default_str();
  sub.add_option("--out", o.out, out_help);
  sub.add_flag("--json", o.json, "Print one JSON object instead of the table");
}

struct PerplexityCli {
  std::string model, file, policies = "full", budgets, out = "perplexity-out", kv_types = "f16";
  SessionCli session;  // -b, --kv-* (--kv-policy and --kv-budget as lists)
  uint32_t n_ctx = 512, chunks = 0;
  bool json = false;
};

int perplexity(const PerplexityCli& o, const Globals& g) {
  PerplexityOptions po;
  po.n_ctx = o.n_ctx, po.max_chunks = o.chunks, po.n_batch = o.session.so.n_batch;
  std::string budgets = o.budgets;
  if (budgets.empty() && !(o.session.so.kv.ratio > 0)) budgets = "256";
  po.specs = make_specs(o.session, o.policies, budgets, true, o.kv_types);
  if (g.check_only) return 0;
  std::string label;
  const std::string text = read_text(o.file, label);
  ProgressBar bar(!o.json, "perplexity " + o.model + " over " + label + ": " + std::to_string(po.specs.size()) +
                               " KV configurations");
  Context ctx(context_options(g));
  Kernels kernels(ctx);
  Model model(kernels, o.model);
  po.on_progress = bar.callback();
  const PerplexityReport r = run_perplexity(model, perplexity_tokens(model, text), label, po);
  bar.finish();
  const auto paths = write_perplexity_files(r, o.out);
  if (o.json) {
    std::printf("%s\n", perplexity_json(r).c_str());
  } else {
    std::fputs(perplexity_table(r).c_str(), stdout);
    std::fflush(stdout);
    std::fprintf(stderr, "perplexity took %.1f s\n", r.total_s);
    print_files(paths);
  }
  return 0;
}

}  // namespace

Runner add_eval(CLI::App& app, const Globals& g) {
  app.require_subcommand(1);
  app.fallthrough();
  std::vector<std::pair<CLI::App*, std::function<int()>>> subs;
  for (EvalTask t : all_eval_tasks()) {
    CLI::App* sub = app.add_subcommand(eval_task_name(t), eval_task_description(t));
    auto o = std::make_shared<EvalCli>();
    add_eval_options(*sub, *o, "0,25,50,75,100",
                     std::string("Directory for ") + eval_task_name(t) +
                         ".csv, .json, .svg (default: " + eval_task_name(t) + "-out)");
    subs.push_back({sub, [o, &g, t] { return eval_task(t, *o, g); }});
  }
  CLI::App* suite =
      app.add_subcommand("suite", "Every task and perplexity per KV policy, summed up (docs/fidelity.md)");
  auto so = std::make_shared<EvalCli>();
  so->policies = kSuitePolicies;
  add_eval_options(*suite, *so, "10,50,90", "Directory for suite.* and each task's files (default: suite-out)");
  suite->add_option("--tasks", so->tasks, "Tasks, comma-separated, or all")->capture_default_str();
  suite->add_option("--text", so->text, "Perplexity text: a file or a built-in text name (none: skip)")
      ->capture_default_str();
  suite->add_option("--ppl-ctx", so->ppl_ctx, "Perplexity chunk length")->capture_default_str();
  suite->add_option("--ppl-chunks", so->ppl_chunks, "Perplexity chunks (0: the whole text)")->capture_default_str();
  subs.push_back({suite, [so, &g] { return eval_suite(*so, g); }});
  return [subs] {
    for (const auto& [sub, run] : subs)
      if (*sub) return run();
    throw Error(ErrorKind::InvalidArgument, "eval: give a task (needle, passkey, ..., suite)");
  };
}

Runner add_perplexity(CLI::App& app, const Globals& g) {
  auto o = std::make_shared<PerplexityCli>();
  app.fallthrough();
  app.add_option("-m,--model", o->model, "GGUF model file")->required();
  app.add_option("-f,--file", o->file, "Text file, or a built-in text name (gpl-3.0)")->required();
  app.add_option("-c,--ctx-size", o->n_ctx, "Chunk length in tokens (even)")->capture_default_str();
  app.add_option("--chunks", o->chunks, "Chunks to score (0: every whole chunk)")->capture_default_str();
  add_kv_list_options(app, o->session, o->policies, o->budgets, o->kv_types, "KV policies, comma-separated (full is always measured)",
                      "Entries kept per KV head (C), comma-separated for several (default: 256)");
  app.add_option("--out", o->out, "Directory for perplexity.csv and perplexity.json")->capture_default_str();
  app.add_flag("--json", o->json, "Print one JSON object instead of the table");
  return [o, &g] { return perplexity(*o, g); };
}

}  // namespace snapvk::cli
