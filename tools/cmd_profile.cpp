// snapvk profile: memory savings, speed and fidelity of KV policies per context length, with
// a table, CSV, JSON, an SVG chart and an HTML page (host/report/profile.h). --dry-run prints the
// memory model's figures for any shape without a device.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "host/gguf/gguf.h"
#include "host/model/model.h"
#include "host/report/profile.h"
#include "host/report/synth.h"
#include "host/session/memory_model.h"
#include "runtime/error.h"
#include "tools/cli.h"
#include "tools/report_cli.h"

namespace snapvk::cli {

namespace {

// The built-in profile: a synthetic model small enough that the whole default profile runs in
// about a minute on a CPU (lavapipe, 2 cores), long enough contexts to show the savings.
constexpr const char* kDefaultPreset = "small-gqa";
constexpr const char* kDefaultContexts = "512,1k,2k,4k";
constexpr const char* kDefaultBudget = "256";

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

// ---- profile ----

struct ProfileCli {
  std::string model, synthetic, weight_type = "f16", contexts, policies = "snapkv,pyramidkv,streamingllm", budgets, kv_types = "f16",
                                out = "profile-out";
  SessionCli session;  // -b, --kv-* (--kv-policy and --kv-budget as lists)
  uint32_t gen = 16;
  bool json = false, dry_run = false, packs = false;
};

int profile(const ProfileCli& o, const Globals& g) {
  if (!o.model.empty() && !o.synthetic.empty())
    throw Error(ErrorKind::InvalidArgument, "give -m MODEL or --synthetic PRESET, not both");
  ProfileOptions po;
  po.gen = o.gen;
  po.n_batch = o.session.so.n_batch;
  po.packs = o.packs;
  const bool builtin = o.model.empty() && o.synthetic.empty();
  const std::string preset = builtin ? kDefaultPreset : o.synthetic;
  std::string budgets = o.budgets;
  if (budgets.empty() && !(o.session.so.kv.ratio > 0)) budgets = kDefaultBudget;
  po.specs = make_specs(o.session, o.policies, budgets, false, o.kv_types);  // checks -b too

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
    ProgressBar bar(!o.json, "profile " + model_label + ": " + std::to_string(po.contexts.size()) + " contexts x " +
                                 std::to_string(po.specs.size() + 1) + " KV configurations");
    Context ctx(context_options(g));
    Kernels kernels(ctx);
    TempFile tmp;
    if (!o.json && shape)
      std::fprintf(stderr, "profiling the built-in synthetic model '%s' (random weights) on %s\n", preset.c_str(),
                   ctx.info().name.c_str());
    std::unique_ptr<Model> model =
        shape ? load_synthetic(kernels, *shape, tmp) : std::make_unique<Model>(kernels, o.model);
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
      app, o->session, o->policies, o->budgets, o->kv_types, "KV policies to compare with the full cache, comma-separated",
      "Entries kept per KV head (C), comma-separated for several (default: " + std::string(kDefaultBudget) + ")");
  app.add_option("--gen", o->gen, "Decode steps per run: timed, and compared with the full cache")
      ->capture_default_str();
  app.add_option("--out", o->out, "Directory for profile.csv, profile.json, profile.svg, profile.html")
      ->capture_default_str();
  app.add_flag("--json", o->json, "Print one JSON object instead of the table");
  app.add_flag("--packs", o->packs,
               "Also save each run's prompt as a pack: its size, load time and time to first token with it");
  app.add_flag("--dry-run", o->dry_run, "Only the memory model's figures for the shape and contexts; runs nothing");
  return [o, &g] { return profile(*o, g); };
}

}  // namespace snapvk::cli
