// snapvk profile: memory savings, speed and fidelity of KV policies per context length, with
// a table, CSV, JSON, an SVG chart and an HTML page (host/report/profile.h). --dry-run prints the
// memory model's figures for any shape without a device.
// snapvk eval needle: the needle-in-a-haystack grid per KV policy (host/report/needle.h).
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "host/gguf/gguf.h"
#include "host/model/model.h"
#include "host/report/needle.h"
#include "host/report/profile.h"
#include "host/report/synth.h"
#include "host/session/memory_model.h"
#include "runtime/error.h"
#include "tools/cli.h"

namespace snapvk::cli {

namespace {

// The built-in profile: a synthetic model small enough that the whole default profile runs in
// about a minute on a CPU (lavapipe, 2 cores), long enough contexts to show the savings.
constexpr const char* kDefaultPreset = "small-gqa";
constexpr const char* kDefaultContexts = "512,1k,2k,4k";
constexpr const char* kDefaultBudget = "256";

// The non-empty items of a comma-separated list.
std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  for (std::string& item : split_list(s))
    if (!item.empty()) out.push_back(std::move(item));
  return out;
}

// A progress bar on stderr, only when stderr is a terminal (and never with --json).
class ProgressBar {
 public:
  explicit ProgressBar(bool wanted) : on_(wanted && isatty(fileno(stderr))) {}
  ~ProgressBar() { finish(); }
  void update(double f, const std::string& what) {
    if (!on_) return;
    const auto now = std::chrono::steady_clock::now();
    if (shown_ && now - last_ < std::chrono::milliseconds(100) && f < 1.0) return;
    last_ = now;
    shown_ = true;
    const int width = 30, filled = int(f * width + 0.5);
    std::string bar(size_t(filled), '#');
    bar += std::string(size_t(width - filled), '.');
    std::fprintf(stderr, "\r[%s] %3d%%  %s\x1b[K", bar.c_str(), int(f * 100 + 0.5), what.c_str());
    std::fflush(stderr);
  }
  void finish() {
    if (on_ && shown_) std::fprintf(stderr, "\r\x1b[K");
    shown_ = false;
  }
  std::function<void(double, const std::string&)> callback() {
    return [this](double f, const std::string& w) { update(f, w); };
  }

 private:
  bool on_ = false, shown_ = false;
  std::chrono::steady_clock::time_point last_{};
};

// The KV configurations: each compressing policy of the list at each budget (or at --kv-ratio).
std::vector<ProfileSpec> make_specs(const KvCliOptions& base, const std::string& policies, const std::string& budgets,
                                    bool keep_full, KvType& kv_type) {
  std::vector<uint32_t> bs;
  if (!budgets.empty()) bs = parse_token_counts(budgets, "--kv-budget");
  if (bs.empty()) bs.push_back(0);  // --kv-ratio (checked by apply_kv_options)
  std::vector<ProfileSpec> specs;
  for (const std::string& p : split(policies)) {
    const auto policy = parse_kv_policy(p);
    if (!policy)
      throw Error(ErrorKind::InvalidArgument,
                  "unknown --kv-policy '" + p + "' (full, snapkv, pyramidkv, streamingllm, h2o, adakv)");
    if (*policy == KvPolicy::Full) {
      if (keep_full &&
          std::none_of(specs.begin(), specs.end(), [](const ProfileSpec& s) { return !s.kv.compresses(); }))
        specs.push_back({"full", KvPolicyOptions{}});
      KvCliOptions k = base;
      k.policy = "full";
      SessionOptions so;
      apply_kv_options(k, so);
      kv_type = so.kv_type;
      continue;
    }
    for (uint32_t b : bs) {
      KvCliOptions k = base;
      k.policy = p;
      k.budget = b;
      if (b) k.ratio = 0;
      SessionOptions so;
      apply_kv_options(k, so);
      kv_type = so.kv_type;
      std::string label = kv_policy_name(*policy);
      if (bs.size() > 1) label += "@" + std::to_string(b);
      if (std::any_of(specs.begin(), specs.end(), [&](const ProfileSpec& s) { return s.label == label; })) continue;
      specs.push_back({label, so.kv});
    }
  }
  if (specs.empty() && !keep_full) {
    // Only "full" was asked for: still check the type.
    KvCliOptions k = base;
    k.policy = "full";
    SessionOptions so;
    apply_kv_options(k, so);
    kv_type = so.kv_type;
  }
  return specs;
}

void add_kv_list_options(CLI::App& app, KvCliOptions& kv, std::string& policies, std::string& budgets,
                         const std::string& policies_help, const std::string& budget_help) {
  app.add_option("--kv-policy", policies, policies_help)->capture_default_str();
  app.add_option("--kv-budget", budgets, budget_help);
  app.add_option("--kv-ratio", kv.ratio, "Budget as a share of each prompt, in (0, 1] (instead of --kv-budget)");
  app.add_option("--kv-window", kv.window, "Observation window W: the last prompt tokens, always kept")
      ->capture_default_str();
  app.add_option("--kv-kernel", kv.kernel, "Pooling kernel size (odd)")->capture_default_str();
  app.add_option("--kv-pool", kv.pool, "Pooling: max or avg")->capture_default_str();
  app.add_option("--kv-gqa", kv.gqa, "Query-head vote aggregation per KV head: mean, max or sum")
      ->capture_default_str();
  app.add_option("--kv-type", kv.type, "KV cache storage: f16, f32 or q8_0")->capture_default_str();
}

// Removes a temporary file when it goes out of scope.
struct TempFile {
  std::string path;
  ~TempFile() {
    if (!path.empty()) {
      std::error_code ec;
      std::filesystem::remove(path, ec);
    }
  }
};

SynthShape synth_shape(const std::string& name, const std::string& type) {
  SynthShape s;
  if (const SynthShape* p = synth_preset(name)) {
    s = *p;
  } else if (name.find('=') != std::string::npos) {
    s = parse_synth_shape(name);
  } else {
    std::string names;
    for (const auto& n : synth_preset_names()) names += (names.empty() ? "" : ", ") + n;
    throw Error(ErrorKind::InvalidArgument, "unknown --synthetic '" + name + "' (a preset: " + names +
                                                "; or a shape such as dim=256,layers=4,heads=8,ff=704,vocab=4096)");
  }
  const auto t = parse_type(type);
  if (!t || !type_traits(static_cast<uint32_t>(*t))->supported)
    throw Error(ErrorKind::InvalidArgument,
                "unsupported --weight-type '" + type + "' (supported: " + supported_type_names() + ")");
  s.weight_type = *t;
  check_synth_shape(s);
  return s;
}

ModelConfig config_of(const SynthShape& s) {
  ModelConfig c;
  c.set_arch(s.arch);
  c.name = "snapvk synth " + s.arch;
  c.n_embd = s.n_embd, c.n_layer = s.n_layer, c.n_head = s.n_head, c.n_head_kv = s.n_head_kv;
  c.head_dim = s.head_size(), c.n_ff = s.n_ff, c.n_vocab = s.n_vocab, c.n_ctx_train = s.n_ctx;
  c.n_rot = c.head_dim;
  c.weight_type = s.weight_type;
  if (c.arch == Arch::Gemma3)
    c.set_swa_pattern(s.sliding_window, s.swa_pattern), c.embd_scale = std::sqrt(float(c.n_embd));
  return c;
}

// A synthetic model written to a temporary GGUF and loaded (the file is removed afterwards).
std::unique_ptr<Model> load_synthetic(Kernels& k, const SynthShape& s, TempFile& tmp) {
  tmp.path =
      (std::filesystem::temp_directory_path() / ("snapvk-profile-" + std::to_string(getpid()) + ".gguf")).string();
  write_synth_gguf(s, tmp.path);
  return std::make_unique<Model>(k, tmp.path);
}

std::vector<uint32_t> default_contexts(const char* list, uint32_t n_ctx_train) {
  std::vector<uint32_t> v = parse_token_counts(list, "contexts"), out;
  for (uint32_t L : v)
    if (!n_ctx_train || L <= n_ctx_train) out.push_back(L);
  if (out.empty()) out.push_back(std::min<uint32_t>(v.front(), n_ctx_train));
  return out;
}

void print_files(const std::vector<std::string>& paths) {
  std::fprintf(stderr, "wrote");
  for (const auto& p : paths) std::fprintf(stderr, " %s", p.c_str());
  std::fprintf(stderr, "\n");
}

// ---- profile ----

struct ProfileCli {
  std::string model, synthetic, weight_type = "f16", contexts, policies = "snapkv,pyramidkv,streamingllm", budgets,
                                out = "profile-out";
  KvCliOptions kv;
  uint32_t gen = 16, n_batch = 256;
  bool json = false, dry_run = false, packs = false;
};

int profile(const ProfileCli& o, const Globals& g) {
  if (!o.model.empty() && !o.synthetic.empty())
    throw Error(ErrorKind::InvalidArgument, "give -m MODEL or --synthetic PRESET, not both");
  ProfileOptions po;
  po.gen = o.gen;
  po.n_batch = o.n_batch;
  po.packs = o.packs;
  const bool builtin = o.model.empty() && o.synthetic.empty();
  const std::string preset = builtin ? kDefaultPreset : o.synthetic;
  std::string budgets = o.budgets;
  if (budgets.empty() && !(o.kv.ratio > 0)) budgets = kDefaultBudget;
  po.specs = make_specs(o.kv, o.policies, budgets, false, po.kv_type);
  if (po.n_batch == 0) throw Error(ErrorKind::InvalidArgument, "-b must be at least 1");

  // The shape, for the dry run and the default contexts.
  std::optional<SynthShape> shape;
  std::optional<GgufFile> file;
  ModelConfig cfg;
  uint64_t weight_bytes = 0;
  if (g.check_only && !o.model.empty()) {
    if (!o.contexts.empty()) parse_token_counts(o.contexts, "--contexts");
    return 0;
  }
  if (o.model.empty()) {
    shape = synth_shape(preset, o.weight_type);
    cfg = config_of(*shape);
    weight_bytes = synth_file_bytes(*shape);
  } else {
    file.emplace(GgufFile::open(o.model));
    cfg = ModelConfig::from_gguf(*file);
    for (const auto& t : file->tensors()) weight_bytes += (t.nbytes + 3) / 4 * 4;
  }
  po.contexts = !o.contexts.empty() ? parse_token_counts(o.contexts, "--contexts")
                                    : default_contexts(kDefaultContexts, o.model.empty() ? 0 : cfg.n_ctx_train);
  const std::string model_label = o.model.empty() ? "synthetic:" + preset + " (" + o.weight_type + ")" : o.model;

  ProfileReport r;
  if (g.check_only && !o.dry_run) return 0;
  if (o.dry_run) {
    r = dry_run_profile(cfg, weight_bytes, g.max_device_memory, po);
    r.model = model_label;
    r.synthetic = shape.has_value();
    if (shape) r.notes.push_back("weights: the synthetic GGUF's size (" + format_bytes(weight_bytes) + ")");
  } else {
    file.reset();
    Context ctx(context_options(g));
    Kernels kernels(ctx);
    TempFile tmp;
    if (!o.json && shape)
      std::fprintf(stderr, "profiling the built-in synthetic model '%s' (random weights) on %s\n", preset.c_str(),
                   ctx.info().name.c_str());
    std::unique_ptr<Model> model =
        shape ? load_synthetic(kernels, *shape, tmp) : std::make_unique<Model>(kernels, o.model);
    ProgressBar bar(!o.json);
    po.on_progress = bar.callback();
    r = run_profile(*model, po);
    bar.finish();
    r.model = model_label;
    if (!o.model.empty())
      for (uint32_t L : r.contexts)
        if (cfg.n_ctx_train && uint64_t(L) + o.gen > cfg.n_ctx_train)
          r.notes.push_back("context " + std::to_string(L) + " + " + std::to_string(o.gen) +
                            " is beyond the model's training context (" + std::to_string(cfg.n_ctx_train) + ")");
  }
  if (g.check_only) return 0;  // a dry run's figures computed, nothing written
  const auto paths = write_profile_files(r, o.out);
  if (o.json) {
    std::printf("%s\n", profile_json(r).c_str());
  } else {
    std::fputs(profile_table(r).c_str(), stdout);
    std::fflush(stdout);
    if (!o.dry_run) std::fprintf(stderr, "profile took %.1f s\n", r.total_s);
    print_files(paths);
  }
  return 0;
}

// ---- eval needle ----

struct NeedleCli {
  std::string model, contexts, depths = "0,25,50,75,100", policies = "full,snapkv", budgets, out = "needle-out";
  KvCliOptions kv;
  uint32_t extra = 4, n_batch = 256;
  uint64_t seed = 1;
  bool json = false;
};

int needle(const NeedleCli& o, const Globals& g) {
  NeedleOptions no;
  no.n_batch = o.n_batch;
  no.extra_tokens = o.extra;
  no.seed = o.seed;
  std::string budgets = o.budgets;
  if (budgets.empty() && !(o.kv.ratio > 0)) budgets = "256";
  no.specs = make_specs(o.kv, o.policies, budgets, true, no.kv_type);
  if (no.specs.empty()) throw Error(ErrorKind::InvalidArgument, "no KV policies to evaluate (--kv-policy)");
  for (const std::string& d : split(o.depths)) {
    size_t used = 0;
    long v = -1;
    try {
      v = std::stol(d, &used);
    } catch (...) {
      used = 0;
    }
    if (used != d.size() || v < 0 || v > 100)
      throw Error(ErrorKind::InvalidArgument, "--depths: '" + d + "' is not a percentage from 0 to 100");
    no.depths.push_back(uint32_t(v));
  }
  if (g.check_only) {
    if (!o.contexts.empty()) parse_token_counts(o.contexts, "--contexts");
    return 0;
  }
  Context ctx(context_options(g));
  Kernels kernels(ctx);
  Model model(kernels, o.model);
  no.contexts = !o.contexts.empty() ? parse_token_counts(o.contexts, "--contexts")
                                    : default_contexts("1k,2k,4k", model.config().n_ctx_train);
  ProgressBar bar(!o.json);
  no.on_progress = bar.callback();
  NeedleReport r = run_needle(model, no);
  bar.finish();
  const auto paths = write_needle_files(r, o.out);
  if (o.json) {
    std::printf("%s\n", needle_json(r).c_str());
  } else {
    std::fputs(needle_grid(r).c_str(), stdout);
    std::fflush(stdout);
    std::fprintf(stderr, "needle grid took %.1f s\n", r.total_s);
    print_files(paths);
  }
  return 0;
}

}  // namespace

Runner add_profile(CLI::App& app, const Globals& g) {
  auto o = std::make_shared<ProfileCli>();
  app.fallthrough();  // the global options (--device, --max-device-memory) may follow the subcommand's
  app.description(
      "Memory savings, speed and fidelity of KV policies per context length: a table, and CSV, JSON, SVG and HTML "
      "in --out. With no model, profiles a built-in synthetic model (random weights: memory and speed only).");
  app.add_option("-m,--model", o->model, "GGUF model file");
  app.add_option("--synthetic", o->synthetic,
                 "Synthetic model: a preset (tiny, small-gqa, 155m, 1b, 8b-attn) or a shape spec (default: " +
                     std::string(kDefaultPreset) + ")");
  app.add_option("--weight-type", o->weight_type, "Weight type of a synthetic model")->capture_default_str();
  app.add_option("--contexts", o->contexts,
                 "Prompt lengths in tokens, comma-separated, k = 1024 (default: " + std::string(kDefaultContexts) +
                     "; with -m, those within the model's training context)");
  add_kv_list_options(
      app, o->kv, o->policies, o->budgets, "KV policies to compare with the full cache, comma-separated",
      "Entries kept per KV head (C), comma-separated for several (default: " + std::string(kDefaultBudget) + ")");
  app.add_option("--gen", o->gen, "Decode steps per run: timed, and compared with the full cache")
      ->capture_default_str();
  app.add_option("-b,--batch-size", o->n_batch, "Prompt tokens per prefill step")
      ->capture_default_str()
      ->check(CLI::Range(1u, 65536u));
  app.add_option("--out", o->out, "Directory for profile.csv, profile.json, profile.svg, profile.html")
      ->capture_default_str();
  app.add_flag("--json", o->json, "Print one JSON object instead of the table");
  app.add_flag("--packs", o->packs,
               "Also save each run's prompt as a pack: its size, load time and time to first token with it");
  app.add_flag("--dry-run", o->dry_run, "Only the memory model's figures for the shape and contexts; runs nothing");
  return [o, &g] { return profile(*o, g); };
}

Runner add_eval(CLI::App& app, const Globals& g) {
  app.require_subcommand(1);
  app.fallthrough();
  CLI::App* sub =
      app.add_subcommand("needle", "Needle in a haystack: find a number hidden at each depth of each context");
  sub->fallthrough();
  auto o = std::make_shared<NeedleCli>();
  sub->add_option("-m,--model", o->model, "GGUF model file")->required();
  sub->add_option("--contexts", o->contexts,
                  "Prompt lengths in tokens, comma-separated, k = 1024 (default: 1k,2k,4k up to the model's context)");
  sub->add_option("--depths", o->depths, "Needle positions, percent of the context, comma-separated")
      ->capture_default_str();
  add_kv_list_options(*sub, o->kv, o->policies, o->budgets, "KV policies, comma-separated (full included if listed)",
                      "Entries kept per KV head (C), comma-separated for several (default: 256)");
  sub->add_option("--extra-tokens", o->extra, "Tokens generated beyond the value's own")->capture_default_str();
  sub->add_option("--seed", o->seed, "Picks the hidden numbers")->capture_default_str();
  sub->add_option("-b,--batch-size", o->n_batch, "Prompt tokens per prefill step")
      ->capture_default_str()
      ->check(CLI::Range(1u, 65536u));
  sub->add_option("--out", o->out, "Directory for needle.csv, needle.json, needle.svg")->capture_default_str();
  sub->add_flag("--json", o->json, "Print one JSON object instead of the grid");
  return [o, &g, sub] {
    if (*sub) return needle(*o, g);
    throw Error(ErrorKind::InvalidArgument, "eval: give a test (needle)");
  };
}

}  // namespace snapvk::cli
