// The JSON writer behind --json and the reports: escaping, nesting, numbers, and valid UTF-8
// even when generated text ends inside a multi-byte character.
#include <gtest/gtest.h>

#include <cmath>

#include "host/report/json.h"

namespace snapvk {
namespace {

TEST(Json, NestsEscapesAndFormats) {
  Json j;
  j.begin_object();
  j.field("text", std::string("a\"b\\c\n\t\x01"));
  j.key("ids").array(std::vector<int32_t>{1, -2, 3});
  j.field("ratio", 2.5).field("nan", std::nan("")).field("ok", true).field("n", uint64_t(1) << 40);
  j.key("empty").begin_array().end_array();
  j.end_object();
  EXPECT_EQ(j.str(),
            "{\"text\":\"a\\\"b\\\\c\\n\\t\\u0001\",\"ids\":[1,-2,3],\"ratio\":2.5,\"nan\":null,\"ok\":true,"
            "\"n\":1099511627776,\"empty\":[]}");
}

TEST(Json, InvalidUtf8BecomesReplacementCharacter) {
  Json j;
  j.value(std::string("caf\xC3\xA9 \xE2\x82") + "|" + "\xF0\x9F\x98\x80" + "\xFF");
  EXPECT_EQ(j.str(), "\"caf\xC3\xA9 \xEF\xBF\xBD\xEF\xBF\xBD|\xF0\x9F\x98\x80\xEF\xBF\xBD\"");
}

TEST(Json, OverlongSurrogateAndOutOfRangeSequencesAreNotUtf8) {
  // RFC 3629: each is refused byte by byte (one U+FFFD per byte).
  for (const char* bad : {"\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80"}) {
    Json j;
    j.value(std::string(bad));
    std::string want = "\"";
    for (size_t i = 0; i < std::string(bad).size(); ++i) want += "\xEF\xBF\xBD";
    EXPECT_EQ(j.str(), want + "\"") << bad;
  }
}

}  // namespace
}  // namespace snapvk
