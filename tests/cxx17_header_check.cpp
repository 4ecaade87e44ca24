// Compiled as C++17 with -Wall -Wextra -pedantic -Werror (see CMakeLists.txt): the header-only
// C++ API must build for applications on older standards than snapvk's own C++20.
#include <snapvk/snapvk.hpp>

#include <string>
#include <vector>

std::string snapvk_cxx17_header_check(const std::string& path);
std::string snapvk_cxx17_header_check(const std::string& path) {
  snapvk::Device device;
  snapvk::Model model(device, path);
  snapvk::SessionOptions so;
  so.kv_policy_name = "snapkv";
  so.kv_budget = 64;
  snapvk::Session session(model, so, [](uint64_t, uint64_t) { return true; });
  session.prefill(model.tokenize("x"));
  session.prefill(std::string("y"));
  std::string text;
  session.generate(4, [&](int32_t, std::string_view piece) { text += piece; });
  session.generate(4, [&](int32_t token, std::string_view) { return token != 0; });
  const auto params = snapvk::SamplingParams();
  session.generate(4, params);
  text += session.generate_text(4);
  text += model.detokenize(model.tokenize("z"));
  const std::vector<snapvk::ChatMessage> chat = {{"system", "Be brief."}, {"user", "Hi"}};
  text += model.apply_chat_template(chat) + model.chat_template().name;
  session.reset();
  session.prefill_chat(chat);
  return text + std::to_string(session.kv_stats().ratio) + snapvk::version();
}
