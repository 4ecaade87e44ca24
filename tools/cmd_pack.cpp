// snapvk pack: prefill (and compress) a document once and write the session's state as a pack
// (docs/packs.md), which `run --pack`, `chat --pack` and the API load instead of prefilling it.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>

#include <nlohmann/json.hpp>

#include "host/model/model.h"
#include "host/pack/pack.h"
#include "host/session/session.h"
#include "runtime/error.h"
#include "tools/cli.h"
#include "tools/report_cli.h"

namespace snapvk::cli {

namespace {

struct PackOptions {
  std::string model, prompt, prompt_file, tokens_file, query, out;
  SessionCli session;  // -b, --kv-*
  bool json = false;
};

int pack(const PackOptions& o, const Globals& g) {
  const int sources = !o.prompt.empty() + !o.prompt_file.empty() + !o.tokens_file.empty();
  if (sources != 1)
    throw Error(ErrorKind::InvalidArgument, "give exactly one of -p PROMPT, -f FILE or --tokens-file FILE");
  SessionOptions so = session_options(o.session);
  if (!o.query.empty() && !so.kv.compresses())
    throw Error(ErrorKind::InvalidArgument, "--pack-query needs a compressing --kv-policy", opt::kv_policy);
  if (g.check_only) return 0;

  ProgressBar bar(!o.json, "pack " + o.model + " -> " + o.out);
  Context ctx(context_options(g));
  Kernels kernels(ctx);
  Model model(kernels, o.model);
  const Tokenizer& tok = model.tokenizer();
  const std::vector<int32_t> doc =
      !o.tokens_file.empty() ? parse_token_ids(read_prompt_file(o.tokens_file), "'" + o.tokens_file + "'")
                             : tok.encode(o.prompt_file.empty() ? o.prompt : read_prompt_file(o.prompt_file), true);
  const std::vector<int32_t> query = o.query.empty() ? std::vector<int32_t>{} : tok.encode(o.query, false);
  if (!o.query.empty() && query.empty()) throw Error(ErrorKind::InvalidArgument, "--pack-query has no tokens");
  so.on_progress = [&bar](uint64_t done, uint64_t total) {  // a step per tenth of the prefill
    const double f = total ? double(done) / double(total) : 1.0;
    bar.update(f, "prefill " + std::to_string(std::min(90, int(f * 10) * 10)) + "-" +
                      std::to_string(std::min(100, int(f * 10) * 10 + 10)) + "%");
    return true;
  };
  double prefill_ms = 0;
  const Pack p = make_pack(model, so, doc, query, &prefill_ms);
  bar.finish();
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<uint8_t> bytes = write_pack(p);
  write_pack_file(o.out, bytes);
  const double write_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (o.json) {
    nlohmann::ordered_json j;
    j["pack"] = o.out, j["bytes"] = bytes.size(), j["tokens"] = doc.size(), j["query_tokens"] = query.size();
    j["policy"] = kv_policy_name(p.policy.policy), j["kv_type"] = kv_types_name(p.kv_types);
    j["prefill_ms"] = prefill_ms, j["write_ms"] = write_ms;
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::fprintf(stderr, "pack %s: %zu tokens%s, kv %s %s, %s; prefill %.1f ms, write %.1f ms\n", o.out.c_str(),
                 doc.size(),
                 query.empty() ? "" : (" (question-aware, " + std::to_string(query.size()) + "-token window)").c_str(),
                 kv_policy_name(p.policy.policy), kv_types_name(p.kv_types).c_str(), bytes_str(bytes.size()).c_str(), prefill_ms,
                 write_ms);
  }
  return 0;
}

}  // namespace

Runner add_pack(CLI::App& app, const Globals& g) {
  auto o = std::make_shared<PackOptions>();
  app.add_option("-m,--model", o->model, "GGUF model file")->required();
  app.add_option("-p,--prompt", o->prompt, "The document's text");
  app.add_option("-f,--file", o->prompt_file, "Read the document from a file");
  app.add_option("--tokens-file", o->tokens_file, "The document as whitespace-separated token ids (no BOS added)");
  app.add_option("-o,--output", o->out, "Pack file to write")->required();
  app.add_option("--pack-query", o->query,
                 "An expected question as the observation window (question-aware compression; not kept in the pack)");
  add_session_options(app, o->session, {"n_ctx"});
  app.add_flag("--json", o->json, "Print one JSON object (size, timings)");
  return [o, &g] { return pack(*o, g); };
}

}  // namespace snapvk::cli
