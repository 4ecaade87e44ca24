// snapvk synth: write a synthetic Llama-family model (deterministic random weights) as GGUF.
// snapvk convert: re-quantize the weight matrices of a GGUF model.
#include <chrono>
#include <cstdio>
#include <memory>

#include "host/gguf/gguf.h"
#include "host/report/synth.h"
#include "runtime/error.h"
#include "tools/cli.h"

namespace snapvk::cli {

namespace {

struct SynthOptions {
  std::string preset, shape, type = "f16", out;
  uint64_t seed = 1;
  bool seed_set = false, list = false;
};

GgmlType parse_weight_type(const std::string& name) {
  const auto t = parse_type(name);
  if (!t || !type_traits(static_cast<uint32_t>(*t))->supported)
    throw Error(ErrorKind::InvalidArgument,
                "unsupported --type '" + name + "' (supported: " + supported_type_names() + ")");
  return *t;
}

std::string count_str(uint64_t n) {
  char buf[32];
  if (n >= 1000000000ull)
    std::snprintf(buf, sizeof buf, "%.2fB", double(n) / 1e9);
  else if (n >= 1000000ull)
    std::snprintf(buf, sizeof buf, "%.1fM", double(n) / 1e6);
  else
    std::snprintf(buf, sizeof buf, "%.1fK", double(n) / 1e3);
  return buf;
}

int list_presets(GgmlType type) {
  std::printf("%-10s %6s %6s %6s %8s %6s %7s %8s %9s %10s %12s\n", "preset", "dim", "layers", "heads", "kv_heads", "hd",
              "ff", "vocab", "ctx", "params", type_name(type));
  for (const std::string& name : synth_preset_names()) {
    SynthShape s = *synth_preset(name);
    s.weight_type = type;
    std::string size;
    try {
      size = bytes_str(synth_file_bytes(s));
    } catch (const Error&) {
      size = "n/a";  // e.g. K-quants on a width that is not a multiple of 256
    }
    s.weight_type = GgmlType::F32;
    std::printf("%-10s %6u %6u %6u %8u %6u %7u %8u %9u %10s %12s\n", name.c_str(), s.n_embd, s.n_layer, s.n_head,
                s.n_head_kv, s.head_size(), s.n_ff, s.n_vocab, s.n_ctx, count_str(synth_param_count(s)).c_str(),
                size.c_str());
  }
  return 0;
}

int synth(const SynthOptions& o, const Globals& g) {
  const GgmlType type = parse_weight_type(o.type);
  if (o.list) return g.check_only ? 0 : list_presets(type);
  if (o.preset.empty() == o.shape.empty())
    throw Error(ErrorKind::InvalidArgument, "give exactly one of --preset NAME or --shape SPEC (or --list)");
  if (o.out.empty()) throw Error(ErrorKind::InvalidArgument, "no output file (-o FILE.gguf)");
  SynthShape s;
  if (!o.preset.empty()) {
    const SynthShape* p = synth_preset(o.preset);
    if (!p) {
      std::string names;
      for (const auto& n : synth_preset_names()) names += (names.empty() ? "" : ", ") + n;
      throw Error(ErrorKind::InvalidArgument, "unknown preset '" + o.preset + "' (" + names + ")");
    }
    s = *p;
  } else {
    s = parse_synth_shape(o.shape);
  }
  s.weight_type = type;
  if (o.seed_set) s.seed = o.seed;
  check_synth_shape(s);
  if (g.check_only) return 0;
  const auto t0 = std::chrono::steady_clock::now();
  write_synth_gguf(s, o.out);
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "wrote %s: %s params, %s, %s, %.1f s\n", o.out.c_str(), count_str(synth_param_count(s)).c_str(),
               type_name(type), bytes_str(synth_file_bytes(s)).c_str(), sec);
  return 0;
}

}  // namespace

Runner add_synth(CLI::App& app, const Globals& g) {
  auto o = std::make_shared<SynthOptions>();
  app.add_option("--preset", o->preset, "Named shape (see --list)");
  app.add_option("--shape", o->shape,
                 "Shape, e.g. \"dim=256,layers=4,heads=8,kv_heads=4,ff=704,vocab=4096,ctx=32768\"");
  app.add_option(
         "--type", o->type,
         "Matrix type: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, iq4_xs")
      ->capture_default_str();
  app.add_option_function<uint64_t>(
      "--seed", [o](uint64_t s) { o->seed = s, o->seed_set = true; }, "Random seed (default 1)");
  app.add_option("-o,--output", o->out, "Output GGUF file");
  app.add_flag("--list", o->list, "List the presets with parameter counts and file sizes for --type");
  return [o, &g] { return synth(*o, g); };
}

Runner add_convert(CLI::App& app, const Globals& g) {
  auto o = std::make_shared<std::tuple<std::string, std::string, std::string>>();
  app.add_option("-m,--model", std::get<0>(*o), "Input GGUF model")->required();
  app.add_option(
         "--type", std::get<1>(*o),
         "Matrix type: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, iq4_xs")
      ->required();
  app.add_option("-o,--output", std::get<2>(*o), "Output GGUF file")->required();
  return [o, &g] {
    const GgmlType type = parse_weight_type(std::get<1>(*o));
    if (g.check_only) return 0;
    GgufFile src = GgufFile::open(std::get<0>(*o));
    rewrite_gguf(src, type, std::get<2>(*o));
    // Report what stayed in another type (rows not whole blocks, 1-D tensors).
    GgufFile out = GgufFile::open(std::get<2>(*o));
    uint64_t kept = 0;
    for (const GgufTensor& t : out.tensors())
      if (t.n_dims == 2 && t.type != type) ++kept;
    std::fprintf(stderr, "wrote %s: %s, %zu tensors (%llu matrices kept their type), %s\n", std::get<2>(*o).c_str(),
                 type_name(type), out.tensors().size(), static_cast<unsigned long long>(kept),
                 bytes_str(out.file_size()).c_str());
    return 0;
  };
}

}  // namespace snapvk::cli
