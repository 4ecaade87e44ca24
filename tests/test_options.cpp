// The option table (host/session/options.h): one declaration per option, which the CLI, the
// server's request JSON, packs and the error messages all walk. These tests take each option
// through each of them, so an option added to the table is checked everywhere without a new test.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <type_traits>

#include "host/server/openai.h"
#include "host/session/options.h"
#include "host/session/session.h"
#include "tools/cli.h"

namespace snapvk::test {
namespace {

// A value of the option other than its default, as the CLI and JSON spell it.
template <class T>
std::string other_value(const T& def) {
  if constexpr (std::is_enum_v<T>) {
    for (const auto& n : names(def))
      if (n.value != def) return n.name;
    return "?";
  } else if constexpr (std::is_floating_point_v<T>) {
    return def == 0.5f ? "0.25" : "0.5";
  } else {
    return def == 3 ? "5" : "3";
  }
}

// The value of a field as the CLI and JSON spell it.
template <class T>
std::string spelled(const T& v) {
  if constexpr (std::is_enum_v<T>)
    return name_in(names(v), v);
  else if constexpr (std::is_floating_point_v<T>)
    return v == 0.25f ? "0.25" : v == 0.5f ? "0.5" : std::to_string(v);
  else
    return std::to_string(v);
}

TEST(Options, KeysFlagsAndParamsAreUniqueAndSpelledAlike) {
  std::set<std::string> keys, flags;
  for (const OptionInfo& o : kOptions) {
    EXPECT_TRUE(keys.insert(o.key).second) << o.key;
    EXPECT_TRUE(flags.insert(std::string(o.long_flag())).second) << o.flag;
    EXPECT_EQ(find_option(o.key), &o);
    EXPECT_EQ(o.param(), Param{o.key});
    EXPECT_TRUE(std::string_view(o.flag).find("--") != std::string_view::npos) << o.flag;
    if (std::string_view(o.key).starts_with("kv_")) {
      // --kv-window for kv_window: the KV options' flags are their keys
      std::string flag = "--" + std::string(o.key);
      for (char& c : flag) c = c == '_' ? '-' : c;
      EXPECT_EQ(o.long_flag(), flag);
    }
  }
  EXPECT_EQ(find_option("kv_nonsense"), nullptr);
  EXPECT_EQ(std::string(find_option("n_batch")->long_flag()), "--batch-size");
  EXPECT_EQ(SessionOptions{}.n_batch, kDefaultBatch);
}

// Every Param that validate() throws names a row of the table (so the CLI can name the flag and
// the C API the field).
TEST(Options, ValidateNamesOptionsOfTheTable) {
  auto param_of = [](auto change) {
    KvPolicyOptions o;
    o.policy = KvPolicy::SnapKV, o.budget = 64;
    change(o);
    try {
      o.validate();
    } catch (const Error& e) {
      return e.param();
    }
    return Param{"(no error)"};
  };
  const Param params[] = {
      param_of([](KvPolicyOptions& o) { o.window = 64; }),
      param_of([](KvPolicyOptions& o) { o.kernel = 4; }),
      param_of([](KvPolicyOptions& o) { o.budget = 0; }),
      param_of([](KvPolicyOptions& o) { o.ratio = 0.5f; }),
      param_of([](KvPolicyOptions& o) { o.pool_ahead = kMaxContext + 1; }),
      param_of([](KvPolicyOptions& o) { o.complete_words = kMaxContext + 1; }),
      param_of([](KvPolicyOptions& o) { o.policy = KvPolicy::Full; }),
  };
  for (const Param& p : params) EXPECT_NE(find_option(param_name(p)), nullptr) << param_name(p);
}

// The rule that the full policy takes no budget lives in validate(), once: every front end
// refuses it with the same option named.
TEST(Options, TheFullPolicyTakesNoBudget) {
  KvPolicyOptions o;
  o.budget = 64;
  try {
    o.validate();
    ADD_FAILURE() << "full with a budget was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.param(), opt::kv_budget);
    EXPECT_NE(std::string(e.what()).find("compressing"), std::string::npos) << e.what();
  }
  o.budget = 0, o.ratio = 0.5f;
  EXPECT_THROW(o.validate(), Error);
  o.ratio = 0;
  EXPECT_NO_THROW(o.validate());
}

// The CLI registers every row and reads a non-default value of each into its field.
TEST(Options, TheCliSetsEveryOption) {
  SessionOptions defaults;  // where every KV option means something: snapkv at 64 with W 2
  defaults.kv.policy = KvPolicy::SnapKV, defaults.kv.budget = 64, defaults.kv.window = 2;
  visit_options(defaults, [&](const OptionInfo& info, const auto& def) {
    CLI::App app;
    cli::SessionCli cli;
    cli::add_session_options(app, cli);
    std::map<std::string, std::string> given = {{"--kv-policy", "snapkv"}, {"--kv-budget", "64"}, {"--kv-window", "2"}};
    const std::string value = other_value(def);
    given[std::string(info.long_flag())] = value;
    if (std::string_view(info.key) == "kv_ratio" || value == "full") given.erase("--kv-budget");
    std::vector<std::string> argv;  // CLI11 takes them last first
    for (const auto& [flag, v] : given) argv.insert(argv.begin(), {v, flag});
    ASSERT_NO_THROW(app.parse(argv)) << info.key;
    SessionOptions got;
    ASSERT_NO_THROW(got = cli::session_options(cli)) << info.key << " " << value;
    bool seen = false;
    visit_options(got, [&](const OptionInfo& i, const auto& v) {
      if (std::string_view(i.key) != info.key) return;
      EXPECT_EQ(spelled(v), value) << info.key;
      seen = true;
    });
    EXPECT_TRUE(seen);
  });
}

TEST(Options, TheCliNamesTheChoicesOfAnEnum) {
  CLI::App app;
  cli::SessionCli cli;
  cli::add_session_options(app, cli);
  app.parse(std::vector<std::string>{"lru", "--kv-policy"});
  try {
    cli::session_options(cli);
    ADD_FAILURE() << "an unknown policy was accepted";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "unknown --kv-policy 'lru' (full, snapkv, pyramidkv, streamingllm, h2o, adakv)");
  }
}

// A server request may set every KV option (kRequest), each checked against the table's bounds
// and names.
TEST(Options, ARequestSetsEveryKvOption) {
  server::RequestDefaults d;
  d.model_id = "m";
  d.kv.policy = KvPolicy::SnapKV, d.kv.budget = 64, d.kv.window = 2;
  visit_kv_options(d.kv, [&](const OptionInfo& info, const auto& def) {
    ASSERT_EQ(info.scope, kRequest) << info.key;
    const std::string value = other_value(def);
    using T = std::remove_cvref_t<decltype(def)>;
    const std::string json_value = std::is_enum_v<T> ? "\"" + value + "\"" : value;
    std::string body = R"({"prompt": "hi", ")" + std::string(info.key) + "\": " + json_value;
    if (std::string_view(info.key) == "kv_policy") body += R"(, "kv_budget": 64)";  // full takes none
    if (std::string_view(info.key) == "kv_policy" && value == "full") body = R"({"prompt": "hi", "kv_policy": "full")";
    body += "}";
    server::GenerationRequest r;
    ASSERT_NO_THROW(r = server::parse_completion_request(body, d)) << body;
    EXPECT_EQ(r.kv_field, info.key);
    bool seen = false;
    visit_kv_options(r.kv, [&](const OptionInfo& i, const auto& v) {
      if (std::string_view(i.key) != info.key) return;
      EXPECT_EQ(spelled(v), value) << body;
      seen = true;
    });
    EXPECT_TRUE(seen);
    // The wrong type is a 400 naming the field.
    const std::string wrong = R"({"prompt": "hi", ")" + std::string(info.key) + R"(": [1]})";
    try {
      server::parse_completion_request(wrong, d);
      ADD_FAILURE() << wrong;
    } catch (const server::ApiError& e) {
      EXPECT_EQ(e.status, 400);
      EXPECT_EQ(e.param, info.key);
    }
  });
}

}  // namespace
}  // namespace snapvk::test
