// Chat on a device: `snapvk run --chat` and `snapvk chat` (lines through a pipe) on stories260K,
// which has no chat template (ChatML by default: nonsense answers, but each turn must run and
// stop), and the C and C++ chat APIs: templates into caller buffers, argument checks, and a
// session that appends only each new turn.
#include <gtest/gtest.h>

#include <algorithm>
#include <regex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <snapvk/snapvk.h>
#include <snapvk/snapvk.hpp>

#include "tests/cli_runner.h"
#include "tests/test_util.h"

namespace snapvk::test {
namespace {

// (The host's headers stay out: snapvk.hpp's classes share their names.)
snapvk::Device& device() {
  static snapvk::Device* d = new snapvk::Device();  // kept to the end, as an application would
  return *d;
}
snapvk::Model& stories() {
  static snapvk::Model* m = new snapvk::Model(device(), model_path("stories260K.gguf"));
  return *m;
}

// The token ids of a ChatML rendering written out here, from the start of a conversation.
std::vector<int32_t> chatml_tokens(const std::string& system, const std::string& user) {
  std::string text = system.empty() ? "" : "<|im_start|>system\n" + system + "<|im_end|>\n";
  text += "<|im_start|>user\n" + user + "<|im_end|>\n<|im_start|>assistant\n";
  return stories().tokenize(text, SNAPVK_TOKENIZE_ADD_SPECIAL | SNAPVK_TOKENIZE_PARSE_SPECIAL);
}

TEST(ChatCli, RunChatPromptIsTheRenderedTurn) {
  const CliResult r = run_cli({"run", "-m", model_path("stories260K.gguf"), "--chat", "-p", "Hello there", "--system",
                               "Be brief.", "--chat-template", "chatml", "--json", "-n", "8", "--temp", "0"});
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("prompt_tokens").get<std::vector<int32_t>>(), chatml_tokens("Be brief.", "Hello there"));
  EXPECT_EQ(j.at("chat_template"), "chatml");
  EXPECT_EQ(j.at("chat_template_source"), "chosen by name");
  EXPECT_LE(j.at("generated_tokens").size(), 8u);
}

TEST(ChatCli, RunChatWithoutTemplateSaysWhichItUses) {
  const CliResult r =
      run_cli({"run", "-m", model_path("stories260K.gguf"), "--chat", "-p", "Hi", "-n", "4", "--temp", "0"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("chat template: chatml (no tokenizer.chat_template; ChatML by default)"), std::string::npos)
      << r.err;
}

TEST(ChatCli, BadTemplateNamesAndOptionsAreOneLineErrors) {
  const std::string m = model_path("stories260K.gguf");
  for (const auto& args :
       std::vector<std::vector<std::string>>{{"run", "-m", m, "--chat", "-p", "Hi", "--chat-template", "nope"},
                                             {"chat", "-m", m, "--chat-template", "nope"}}) {
    const CliResult r = run_cli(args);
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_NE(r.err.find("unknown --chat-template 'nope' (names: chatml, llama3, gemma, mistral (alias llama2), phi3"),
              std::string::npos)
        << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  const CliResult sys = run_cli({"run", "-m", m, "-p", "Hi", "--system", "S"});
  EXPECT_EQ(sys.code, 1);
  EXPECT_NE(sys.err.find("--system and --chat-template need --chat"), std::string::npos) << sys.err;
}

// "[kv snapkv: X retained for N tokens (first K compressed), ...]" -> (N, K) per turn.
std::vector<std::pair<int, int>> kv_lines(const std::string& err) {
  std::vector<std::pair<int, int>> out;
  const std::regex re(R"(\[kv snapkv: .* retained for (\d+) tokens \(first (\d+) compressed\))");
  for (auto it = std::sregex_iterator(err.begin(), err.end(), re); it != std::sregex_iterator(); ++it)
    out.emplace_back(std::stoi((*it)[1]), std::stoi((*it)[2]));
  return out;
}

TEST(ChatCli, ChatThroughAPipeAppendsEachTurnAndResets) {
  const CliResult r = run_cli_with_input(
      {"chat", "-m", model_path("stories260K.gguf"), "--chat-template", "chatml", "--system", "You tell stories.",
       "--kv-policy", "snapkv", "--kv-ratio", "0.5", "--kv-window", "4", "-n", "12", "--temp", "0"},
      "Tell me a story.\nAnd then?\n/reset\nOnce upon a time\n");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("chat template chatml (chosen by name)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("[new conversation]"), std::string::npos) << r.err;
  const auto turns = kv_lines(r.err);
  ASSERT_EQ(turns.size(), 3u) << r.err;
  // The first turn is compressed; the second is appended after it (the same compressed prompt,
  // more tokens held), not prefilled again; /reset starts a new conversation. (With a --kv-budget
  // the chat is endless and compacts at each turn's end: tests/test_endless.cpp.)
  const int first_prompt = int(chatml_tokens("You tell stories.", "Tell me a story.").size());
  EXPECT_EQ(turns[0].second, first_prompt);
  EXPECT_EQ(turns[1].second, first_prompt);
  EXPECT_GT(turns[1].first, turns[0].first + 12);
  EXPECT_EQ(turns[2].second, int(chatml_tokens("You tell stories.", "Once upon a time").size()));
  EXPECT_GE(std::count(r.out.begin(), r.out.end(), '\n'), 3) << r.out;  // each answer ends its line
}

// ---- C and C++ APIs ------------------------------------------------------------------------------

snapvk_chat_message msg(const char* role, const char* content) {
  snapvk_chat_message m{};
  m.struct_size = sizeof m;
  m.role = role;
  m.content = content;
  return m;
}

struct ApiChat : ::testing::Test {
  static snapvk::Model& model() { return stories(); }
};

TEST_F(ApiChat, TemplateInfoAndRenderingIntoCallerBuffers) {
  const snapvk::ChatTemplateInfo info = model().chat_template();
  EXPECT_STREQ(info.name, "chatml");
  EXPECT_STREQ(info.source, "no tokenizer.chat_template; ChatML by default");
  EXPECT_EQ(info.has_default_system, 0u);
  const snapvk_chat_message msgs[] = {msg("system", "S"), msg("user", "Hi")};
  const std::string want = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
  size_t len = 0;
  ASSERT_EQ(snapvk_chat_apply_template(model().get(), msgs, 2, 1, nullptr, 0, &len), SNAPVK_OK) << snapvk_last_error();
  EXPECT_EQ(len, want.size());
  std::vector<char> buf(len + 1);
  EXPECT_EQ(snapvk_chat_apply_template(model().get(), msgs, 2, 1, buf.data(), len, &len), SNAPVK_BUFFER_TOO_SMALL);
  ASSERT_EQ(snapvk_chat_apply_template(model().get(), msgs, 2, 1, buf.data(), buf.size(), &len), SNAPVK_OK);
  EXPECT_EQ(std::string(buf.data()), want);
  EXPECT_EQ(model().apply_chat_template({{"system", "S"}, {"user", "Hi"}}), want);
  EXPECT_EQ(model().apply_chat_template({{"user", "Hi"}}, false), "<|im_start|>user\nHi<|im_end|>\n");
}

TEST_F(ApiChat, ArgumentsAreChecked) {
  snapvk_chat_message msgs[] = {msg("user", "Hi"), msg("assistant", "Yo")};
  size_t len = 0;
  EXPECT_EQ(snapvk_chat_apply_template(nullptr, msgs, 2, 1, nullptr, 0, &len), SNAPVK_INVALID_ARGUMENT);
  EXPECT_EQ(snapvk_chat_apply_template(model().get(), nullptr, 2, 1, nullptr, 0, &len), SNAPVK_INVALID_ARGUMENT);
  EXPECT_EQ(snapvk_chat_apply_template(model().get(), msgs, 2, 1, nullptr, 0, nullptr), SNAPVK_INVALID_ARGUMENT);
  EXPECT_EQ(snapvk_chat_apply_template(model().get(), msgs, 2, 1, nullptr, 8, &len), SNAPVK_INVALID_ARGUMENT);
  msgs[1].struct_size = 0;  // every element's struct_size is the stride
  EXPECT_EQ(snapvk_chat_apply_template(model().get(), msgs, 2, 1, nullptr, 0, &len), SNAPVK_INVALID_ARGUMENT);
  EXPECT_NE(std::string(snapvk_last_error()).find("messages[1].struct_size"), std::string::npos) << snapvk_last_error();
  msgs[1] = msg("assistant", nullptr);
  EXPECT_EQ(snapvk_chat_apply_template(model().get(), msgs, 2, 1, nullptr, 0, &len), SNAPVK_INVALID_ARGUMENT);
  EXPECT_EQ(snapvk_model_get_chat_template(model().get(), nullptr), SNAPVK_INVALID_ARGUMENT);
  EXPECT_EQ(snapvk_session_prefill_chat(nullptr, msgs, 1, 1), SNAPVK_INVALID_ARGUMENT);

  // A template by name when loading; an unknown name fails the load and lists the names.
  snapvk::ModelOptions mo;
  mo.chat_template = "gemma";
  EXPECT_STREQ(snapvk::Model(device(), model_path("stories260K.gguf"), mo).chat_template().name, "gemma");
  mo.chat_template = "nope";
  snapvk_model* bad = nullptr;
  EXPECT_EQ(snapvk_model_load(device().get(), model_path("stories260K.gguf").c_str(), &mo, &bad),
            SNAPVK_INVALID_ARGUMENT);
  EXPECT_EQ(bad, nullptr);
  EXPECT_NE(std::string(snapvk_last_error()).find("chatml, llama3, gemma"), std::string::npos) << snapvk_last_error();
}

TEST_F(ApiChat, SessionAppendsOnlyEachNewTurn) {
  snapvk::SessionOptions so;
  so.n_ctx = 512;
  snapvk::Session chat(model(), so);
  std::vector<snapvk::ChatMessage> m = {{"system", "S"}, {"user", "Hello"}};
  chat.prefill_chat(m);
  const auto first = chatml_tokens("S", "Hello");
  EXPECT_EQ(chat.kv_stats().n_past, first.size());
  std::string answer;
  const snapvk::GenerateResult g = chat.generate(6, [&](int32_t, std::string_view piece) { answer += piece; });
  const uint32_t held = chat.kv_stats().n_past;
  EXPECT_EQ(held, first.size() + g.n_tokens);

  // The next turn: only its text (the answer's end of turn, the user's turn, the assistant's opening).
  const snapvk_chat_message old[] = {msg("system", "S"), msg("user", "Hello")};
  EXPECT_EQ(snapvk_session_prefill_chat(chat.get(), old, 2, 1), SNAPVK_INVALID_ARGUMENT);  // the answer is missing
  m.push_back({"assistant", answer});
  m.push_back({"user", "More"});
  chat.prefill_chat(m);
  const auto turn = model().tokenize("<|im_end|>\n<|im_start|>user\nMore<|im_end|>\n<|im_start|>assistant\n",
                                     SNAPVK_TOKENIZE_PARSE_SPECIAL);
  EXPECT_EQ(chat.kv_stats().n_past, held + turn.size());
  EXPECT_THROW(chat.prefill_chat(m), snapvk::Error);  // nothing new
  const snapvk_chat_message edited[] = {msg("system", "T"), msg("user", "Hello")};
  EXPECT_EQ(snapvk_session_prefill_chat(chat.get(), edited, 2, 1), SNAPVK_INVALID_ARGUMENT);
  EXPECT_NE(std::string(snapvk_last_error()).find("do not continue the conversation"), std::string::npos);

  // A plain prompt in between breaks the chat until a reset.
  chat.prefill(std::string(" and"));
  m.push_back({"assistant", ""});
  m.push_back({"user", "Again"});
  EXPECT_THROW(chat.prefill_chat(m), snapvk::Error);
  chat.reset();
  chat.prefill_chat({{"user", "Again"}});
  EXPECT_EQ(chat.kv_stats().n_past, chatml_tokens("", "Again").size());
}

}  // namespace
}  // namespace snapvk::test
