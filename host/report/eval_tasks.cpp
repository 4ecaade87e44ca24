#include "host/report/eval_tasks.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <functional>

#include "host/kernels/attention.h"
#include "host/model/model.h"
#include "runtime/checked.h"
#include "runtime/error.h"

namespace snapvk {

namespace {

const char* const kFiller[] = {
    "The grass in the valley is green and the sky above it is blue.",
    "A small river runs past the old mill, and the water is cold and clear.",
    "In the morning the baker opens his shop and the town smells of bread.",
    "Children walk to school along the river, talking about the day ahead.",
    "In the evening the lights come on one by one, and the streets grow quiet.",
};
const char* const kPasskeyFiller =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
const char* const kWords[] = {"lantern", "violin",    "pelican", "compass", "avocado", "glacier", "saddle",   "thimble",
                              "walrus",  "cathedral", "pepper",  "anchor",  "harp",    "meadow",  "tornado",  "velvet",
                              "kettle",  "falcon",    "orchid",  "pyramid", "biscuit", "canyon",  "dolphin",  "emerald",
                              "feather", "giraffe",   "hammock", "igloo",   "jasmine", "koala",   "lemonade", "marble"};
const char* const kAdjectives[] = {"quiet",  "golden", "frozen",  "silver", "hidden", "rusty",   "gentle", "ancient",
                                   "bright", "hollow", "crooked", "sleepy", "wooden", "distant", "narrow", "brave"};
const char* const kColours[] = {"orange", "purple", "green", "crimson", "yellow", "violet", "scarlet", "turquoise"};
const char* const kDoors[] = {"red", "blue", "green", "yellow"};
const char* const kFirst[] = {"Maria",  "James",  "Aisha",  "Kenji", "Olga",  "Pedro", "Fatima", "Lucas",
                              "Ingrid", "Tomas",  "Chloe",  "Rahul", "Yuki",  "Omar",  "Elena",  "Samuel",
                              "Nadia",  "Victor", "Hannah", "Diego", "Priya", "Felix", "Amara",  "Bruno",
                              "Leila",  "Marcus", "Sofia",  "Anton", "Grace", "Ivan",  "Zara",   "Hugo",
                              "Mei",    "Oscar",  "Clara",  "Tariq", "Julia", "Emil",  "Rosa",   "Kofi"};
const char* const kLast[] = {"Lopez",   "Meyer",    "Okafor",  "Tanaka", "Novak",  "Silva",     "Haddad",  "Dubois",
                             "Berg",    "Kowalski", "Martin",  "Sharma", "Sato",   "Nasser",    "Petrova", "Cohen",
                             "Ibrahim", "Rossi",    "Fischer", "Moreno", "Patel",  "Wagner",    "Mensah",  "Costa",
                             "Karimi",  "Bennett",  "Romano",  "Volkov", "Walsh",  "Popescu",   "Ahmed",   "Laurent",
                             "Chen",    "Larsen",   "Weber",   "Farouk", "Santos", "Lindqvist", "Ortega",  "Asante"};
const char* const kCities[] = {"Porto",   "Kyoto",    "Nairobi", "Oslo",    "Lima",     "Dublin", "Hanoi",   "Tunis",
                               "Krakow",  "Quito",    "Seville", "Perth",   "Bergen",   "Accra",  "Lyon",    "Tbilisi",
                               "Ghent",   "Cusco",    "Malmo",   "Dakar",   "Granada",  "Riga",   "Leipzig", "Mombasa",
                               "Tallinn", "Valletta", "Zagreb",  "Bologna", "Salzburg", "Izmir",  "Tromso",  "Cordoba"};
const char* const kJobs[] = {"baker",    "pilot",     "nurse",   "carpenter", "chemist",  "librarian",
                             "plumber",  "sailor",    "dentist", "florist",   "jeweller", "tailor",
                             "surveyor", "beekeeper", "potter",  "translator"};
constexpr uint32_t kNames = 40 * 40;

template <size_t N>
const char* pick(const char* const (&list)[N], uint64_t x) {
  return list[x % N];
}

uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::string five_digits(uint64_t x) { return std::to_string(10000 + x % 90000); }

// What a task places in its prompt, as text; assemble() turns it into exactly `context` tokens.
struct TaskText {
  std::string prefix;                                   // before the haystack (passkey's instruction)
  std::function<std::string(size_t)> fill;              // the i-th haystack sentence
  std::vector<std::pair<double, std::string>> inserts;  // (depth in [0, 1], sentence); the first is asked for
  std::string question, value;
  bool ignore_case = false;
};

TaskText needle_text(uint64_t s) {
  TaskText t;
  t.fill = [](size_t i) { return std::string(kFiller[i % std::size(kFiller)]); };
  t.value = five_digits(s);
  t.inserts.push_back({0, "The secret number is " + t.value + "."});
  t.question = "What is the secret number? The secret number is";
  return t;
}

TaskText word_text(uint64_t s) {
  TaskText t = needle_text(s);
  t.value = pick(kWords, s);
  t.inserts = {{0, "The secret word is " + t.value + "."}};
  t.question = "What is the secret word? The secret word is";
  t.ignore_case = true;
  return t;
}

TaskText phrase_text(uint64_t s) {
  TaskText t = needle_text(s);
  t.value = std::string(pick(kAdjectives, s)) + " " + pick(kColours, s >> 8) + " " + pick(kWords, s >> 16);
  t.inserts = {{0, "The secret phrase is " + t.value + "."}};
  t.question = "What is the secret phrase? The secret phrase is";
  t.ignore_case = true;
  return t;
}

TaskText multi_text(uint64_t s, double depth) {
  TaskText t = needle_text(s);
  t.inserts.clear();
  const size_t asked = s % std::size(kDoors);
  std::vector<std::string> values;
  for (size_t k = 0; k < std::size(kDoors); ++k) {
    std::string v;
    uint64_t bump = 0;
    do v = five_digits(mix(s + 7919 * (k + 1) + 104729 * bump++));
    while (std::find(values.begin(), values.end(), v) != values.end());
    values.push_back(v);
  }
  // the asked door at `depth`, the others a quarter of the text apart from it and each other
  for (size_t k = 0; k < std::size(kDoors); ++k) {
    const size_t door = (asked + k) % std::size(kDoors);
    t.inserts.push_back({std::fmod(depth + 0.25 * double(k), 1.0),
                         std::string("The secret number of the ") + kDoors[door] + " door is " + values[door] + "."});
  }
  t.value = values[asked];
  t.question = std::string("What is the secret number of the ") + kDoors[asked] + " door? The secret number of the " +
               kDoors[asked] + " door is";
  return t;
}

TaskText passkey_text(uint64_t s) {
  TaskText t;
  t.prefix =
      "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. I will quiz you "
      "about the important information there.";
  t.fill = [](size_t) { return std::string(kPasskeyFiller); };
  t.value = five_digits(s);
  t.inserts.push_back({0, "The pass key is " + t.value + ". Remember it. " + t.value + " is the pass key."});
  t.question = "What is the pass key? The pass key is";
  return t;
}

// A register of distinct people; record 0 is the asked one, the haystack holds records 1, 2, ...
TaskText docqa_text(uint64_t s) {
  const uint64_t start = s % kNames, stride = 1597;  // 1597 is prime: coprime with 1600, so names never repeat
  auto name_of = [=](size_t i) {
    const uint64_t n = (start + i * stride) % kNames;
    return std::string(kFirst[n % 40]) + " " + kLast[n / 40];
  };
  auto record = [=](size_t i) {
    const uint64_t n = (start + i * stride) % kNames, r = mix(n * 31 + s);
    return name_of(i) + " lives in " + pick(kCities, r) + " and works as a " + pick(kJobs, r >> 8) + ".";
  };
  TaskText t;
  t.prefix = "The town register lists every resident, where they live and what they do.";
  t.fill = [=](size_t i) { return record(i % (kNames - 1) + 1); };
  t.inserts.push_back({0, record(0)});
  const uint64_t r = mix(((start) % kNames) * 31 + s);
  const std::string name = name_of(0);
  if ((s >> 20) % 2 == 0) {
    t.question = "Where does " + name + " live? " + name + " lives in";
    t.value = pick(kCities, r);
  } else {
    t.question = "What does " + name + " do for a living? " + name + " works as a";
    t.value = pick(kJobs, r >> 8);
  }
  return t;
}

TaskText task_text(EvalTask task, uint64_t s, double depth) {
  switch (task) {
    case EvalTask::Needle: return needle_text(s);
    case EvalTask::NeedleWord: return word_text(s);
    case EvalTask::NeedlePhrase: return phrase_text(s);
    case EvalTask::MultiNeedle: return multi_text(s, depth);
    case EvalTask::Passkey: return passkey_text(s);
    case EvalTask::DocQa: return docqa_text(s);
  }
  return needle_text(s);
}

}  // namespace

const char* eval_task_name(EvalTask t) {
  switch (t) {
    case EvalTask::Needle: return "needle";
    case EvalTask::NeedleWord: return "needle-word";
    case EvalTask::NeedlePhrase: return "needle-phrase";
    case EvalTask::MultiNeedle: return "multi-needle";
    case EvalTask::Passkey: return "passkey";
    case EvalTask::DocQa: return "docqa";
  }
  return "?";
}

const std::vector<EvalTask>& all_eval_tasks() {
  static const std::vector<EvalTask> all = {EvalTask::Needle,      EvalTask::NeedleWord, EvalTask::NeedlePhrase,
                                            EvalTask::MultiNeedle, EvalTask::Passkey,    EvalTask::DocQa};
  return all;
}

std::optional<EvalTask> parse_eval_task(std::string_view name) {
  for (EvalTask t : all_eval_tasks())
    if (name == eval_task_name(t)) return t;
  return std::nullopt;
}

const char* eval_task_description(EvalTask t) {
  switch (t) {
    case EvalTask::Needle: return "a 5-digit secret number hidden in repeated filler";
    case EvalTask::NeedleWord: return "a secret word (one common noun) hidden in repeated filler";
    case EvalTask::NeedlePhrase: return "a three-word secret phrase, to be given whole and in order";
    case EvalTask::MultiNeedle: return "four numbers for four doors spread over the text; one door is asked for";
    case EvalTask::Passkey: return "passkey retrieval (Mohtashami & Jaggi 2023): a 5-digit key in repeated filler";
    case EvalTask::DocQa: return "a register of people: where one lives or what one does, a span of the text";
  }
  return "";
}

TaskPrompt task_prompt(EvalTask task, const Tokenizer& tok, uint32_t n_vocab, uint32_t context, uint32_t depth,
                       uint64_t seed) {
  checked_range(context, 1, kMaxContext,
                std::string(eval_task_name(task)) + ": context length");  // before building `context` tokens
  const double frac = double(std::min<uint32_t>(depth, 100)) / 100.0;
  const uint64_t s = mix(seed * 1000003ull + context * 131ull + depth + 7 * uint64_t(task));
  TaskText t = task_text(task, s, frac);
  t.inserts.front().first = frac;
  // SentencePiece puts the space before a word itself; byte-level BPE needs it written, so
  // each sentence is tokenised as it appears after the previous one.
  const bool spm = tok.vocab().model == "llama" && tok.vocab().add_space_prefix;
  auto encode = [&](const std::string& str, bool first) {
    auto ids = tok.encode(spm || first ? str : " " + str, false);
    std::erase_if(ids, [&](int32_t id) { return id < 0 || uint32_t(id) >= n_vocab; });
    return ids;
  };
  TaskPrompt p;
  p.value = t.value;
  p.ignore_case = t.ignore_case;
  p.value_tokens = uint32_t(encode(t.value, false).size());
  const bool bos = tok.bos() >= 0 && uint32_t(tok.bos()) < n_vocab;
  const auto prefix = t.prefix.empty() ? std::vector<int32_t>{} : encode(t.prefix, true);
  const auto question = encode(t.question, false);
  std::vector<std::vector<int32_t>> inserts;
  uint64_t fixed = (bos ? 1 : 0) + prefix.size() + question.size();
  for (const auto& in : t.inserts) fixed += inserts.emplace_back(encode(in.second, false)).size();
  if (context < fixed + 1)
    throw Error(ErrorKind::InvalidArgument, "a context of " + std::to_string(context) + " tokens is too short for " +
                                                eval_task_name(task) + " (" + std::to_string(fixed) +
                                                " tokens without any filler)");
  // Filler of exactly F tokens, remembering where each sentence starts.
  const uint32_t F = uint32_t(context - fixed);
  std::vector<int32_t> filler;
  std::vector<uint32_t> starts;
  for (size_t i = 0; filler.size() < F; ++i) {
    const auto ids = encode(t.fill(i), prefix.empty() && i == 0);
    if (ids.empty()) continue;
    starts.push_back(uint32_t(filler.size()));
    for (size_t j = 0; j < ids.size() && filler.size() < F; ++j) filler.push_back(ids[j]);
  }
  starts.push_back(F);
  // Each insert goes to the sentence boundary nearest its depth; ties keep the list's order.
  std::vector<std::pair<uint32_t, size_t>> at;  // (filler offset, insert)
  for (size_t k = 0; k < inserts.size(); ++k) {
    const double want = t.inserts[k].first * F;
    uint32_t best = starts.front();
    for (uint32_t st : starts)
      if (std::abs(double(st) - want) < std::abs(double(best) - want)) best = st;
    at.push_back({best, k});
  }
  std::stable_sort(at.begin(), at.end());
  if (bos) p.tokens.push_back(tok.bos());
  p.tokens.insert(p.tokens.end(), prefix.begin(), prefix.end());
  uint32_t from = 0;
  for (const auto& [off, k] : at) {
    p.tokens.insert(p.tokens.end(), filler.begin() + from, filler.begin() + off);
    if (k == 0) p.needle_pos = uint32_t(p.tokens.size());
    p.tokens.insert(p.tokens.end(), inserts[k].begin(), inserts[k].end());
    from = off;
  }
  p.tokens.insert(p.tokens.end(), filler.begin() + from, filler.end());
  p.tokens.insert(p.tokens.end(), question.begin(), question.end());
  return p;
}

bool task_answered(const TaskPrompt& p, const std::string& generated) {
  if (!p.ignore_case) return generated.find(p.value) != std::string::npos;
  auto lower = [](std::string s) {
    for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
    return s;
  };
  return lower(generated).find(lower(p.value)) != std::string::npos;
}

}  // namespace snapvk
