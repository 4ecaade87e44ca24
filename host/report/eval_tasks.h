#pragma once
// The retrieval tasks of the fidelity suite (`snapvk eval TASK`): each builds a prompt of exactly
// the context length from project-generated text, with what must be found placed at a depth, and
// a question at the end whose answer the model should copy from the prompt. Everything is made
// from fixed word lists and a seed: nothing is downloaded, and a cell is the same on every run.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "host/model/tokenizer.h"

namespace snapvk {

enum class EvalTask {
  Needle,        // "The secret number is 48213." in repeated filler: a 5-digit number
  NeedleWord,    // "The secret word is lantern.": one common word
  NeedlePhrase,  // "The secret phrase is quiet orange harbor.": three words, in order
  MultiNeedle,   // four numbers, one per coloured door, spread over the context; one is asked for
  Passkey,       // the passkey-retrieval prompt of Mohtashami & Jaggi (2023), a 5-digit key
  DocQa,         // a register of people (city, job); a question whose answer is a span of it
};
const char* eval_task_name(EvalTask t);
std::optional<EvalTask> parse_eval_task(std::string_view name);
const std::vector<EvalTask>& all_eval_tasks();
// One line: what the task measures (docs/fidelity.md says more).
const char* eval_task_description(EvalTask t);

struct TaskPrompt {
  std::vector<int32_t> tokens;  // exactly the context length
  uint32_t needle_pos = 0;      // token index where the asked-for sentence starts
  std::string value;            // the answer, to be found in the generated text
  uint32_t value_tokens = 0;    // tokens of the answer on its own
  bool ignore_case = false;     // words may come back capitalised
};

// The prompt of one cell: `depth` is the asked-for sentence's position, percent of the text.
// Throws snapvk::Error (InvalidArgument) when the context is too short for the task's fixed parts.
TaskPrompt task_prompt(EvalTask task, const Tokenizer& tok, uint32_t n_vocab, uint32_t context, uint32_t depth,
                       uint64_t seed);

// Whether `generated` holds the answer.
bool task_answered(const TaskPrompt& p, const std::string& generated);

}  // namespace snapvk
