// The server's scheduler without HTTP: jobs submitted to a Scheduler directly, their text and
// their typed failures (JobFailure), on stories260K. tests/test_serve.cpp checks what the HTTP
// side makes of them.
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "host/kernels/ops.h"
#include "host/model/chat_template.h"
#include "host/server/scheduler.h"
#include "host/session/generate.h"
#include "host/session/memory_model.h"
#include "runtime/context.h"
#include "tests/greedy.h"
#include "tests/test_util.h"

namespace snapvk::test {
namespace {

using namespace std::chrono_literals;
using server::Job;
using server::JobError;
using server::JobFailure;
using server::Scheduler;
using server::SchedulerOptions;

const std::string kStories = "stories260K.gguf";
constexpr auto kWait = std::chrono::minutes(5);  // far longer than any job here takes

// A model on its own device context (a test may give it a memory budget), and its template.
struct Served {
  // spare: device bytes the sessions may use beyond the weights (none: no budget).
  explicit Served(std::function<uint64_t(const Model&)> spare = {})
      : ctx(ContextOptions{}),
        kernels(ctx),
        model(kernels, model_path(kStories)),
        tmpl(ChatTemplate::for_model(model.gguf(), model.tokenizer())) {
    if (spare) ctx.memory().set_budget(ctx.memory().current() + spare(model));
  }
  ~Served() { EXPECT_EQ(ctx.validation_errors(), 0u) << ctx.last_validation_message(); }

  Context ctx;
  Kernels kernels;
  Model model;
  ChatTemplate tmpl;
};

std::shared_ptr<Job> completion(const std::string& prompt, uint32_t max_tokens) {
  auto job = std::make_shared<Job>();
  job->req.prompt = prompt;
  job->req.max_tokens = max_tokens;
  job->req.sampler.temp = 0;
  return job;
}

std::shared_ptr<Job> chat(const std::vector<ChatMessage>& messages, uint32_t max_tokens) {
  auto job = completion("", max_tokens);
  job->req.chat = true;
  job->req.messages = messages;
  return job;
}

// A job that generates until cancelled (its 2000 tokens take far longer than the test).
std::shared_ptr<Job> endless() {
  auto job = completion("Once upon a time", 2000);
  job->req.stop = {"zzzz"};
  return job;
}

// Cancels a job when the test ends, also when an assertion ends it early (the scheduler's
// stop() would wait for the job's 2000 tokens otherwise).
struct CancelAtEnd {
  Scheduler& s;
  std::shared_ptr<Job> job;
  ~CancelAtEnd() { s.cancel(job); }
};

// Submits a job that should be queued (false, and the test fails: it was refused).
bool accepted(Scheduler& s, const std::shared_ptr<Job>& job) {
  try {
    s.submit(job);
  } catch (const JobError& e) {
    ADD_FAILURE() << "refused: " << e.what();
    return false;
  }
  return true;
}

// What submit() refused the job with. Nullopt: it was queued, and is cancelled again, so that
// a scheduler that should have refused it does not run it or wait for it in stop().
std::optional<JobError> refusal(Scheduler& s, const std::shared_ptr<Job>& job) {
  try {
    s.submit(job);
  } catch (const JobError& e) {
    return e;
  }
  s.cancel(job);
  return std::nullopt;
}

// The job's failure once it ended (nullopt: it answered).
std::optional<JobFailure> failure_of(Job& job) {
  EXPECT_TRUE(job.wait_done(kWait)) << "the job never ended";
  const auto e = job.error();
  return e ? std::optional(e->failure) : std::nullopt;
}


TEST(Scheduler, AJobAnswersAsTheGenerationLoop) {
  Served sv;
  Scheduler s(sv.model, sv.tmpl, SchedulerOptions{});
  const std::string prompt = "Once upon a time, there was a little";
  auto job = completion(prompt, 16);
  ASSERT_TRUE(accepted(s, job));
  EXPECT_EQ(failure_of(*job), std::nullopt) << job->error()->what();
  const server::Outcome o = job->outcome();
  EXPECT_EQ(o.text, direct_greedy(sv.model, prompt, 16));
  EXPECT_EQ(o.finish_reason, "length");
  EXPECT_EQ(o.completion_tokens, 16u);
  EXPECT_EQ(o.prompt_tokens, sv.model.tokenizer().encode(prompt, true).size());
  EXPECT_EQ(o.cached_tokens, 0u);
}

TEST(Scheduler, AFullQueueRefusesWithQueueFull) {
  Served sv;
  SchedulerOptions so;
  so.parallel = 1, so.queue_size = 1;
  Scheduler s(sv.model, sv.tmpl, so);
  auto running = endless();
  const CancelAtEnd guard{s, running};
  ASSERT_TRUE(accepted(s, running));
  ASSERT_TRUE(running->wait_started(kWait));
  auto waiting = completion("Lily", 4);
  ASSERT_TRUE(accepted(s, waiting));  // the slot is busy: it waits
  EXPECT_EQ(s.stats().queued, 1u);
  const auto full = refusal(s, completion("Tom", 4));
  ASSERT_TRUE(full);
  EXPECT_EQ(full->failure, JobFailure::QueueFull) << full->what();
  s.cancel(running);  // the slot comes free: the waiting job runs
  EXPECT_EQ(failure_of(*running), JobFailure::Cancelled);
  EXPECT_EQ(failure_of(*waiting), std::nullopt);
  EXPECT_EQ(waiting->outcome().completion_tokens, 4u);
}

TEST(Scheduler, CancelTakesAQueuedJobOutOfTheQueue) {
  Served sv;
  SchedulerOptions so;
  so.parallel = 1;
  Scheduler s(sv.model, sv.tmpl, so);
  auto running = endless();
  const CancelAtEnd guard{s, running};
  ASSERT_TRUE(accepted(s, running));
  ASSERT_TRUE(running->wait_started(kWait));
  auto queued = completion("Lily", 4);
  ASSERT_TRUE(accepted(s, queued));
  EXPECT_EQ(queued->state(), Job::State::Queued);
  s.cancel(queued);
  // Ended at once, never started: the slot is still the running job's.
  EXPECT_EQ(queued->state(), Job::State::Done);
  EXPECT_EQ(queued->error()->failure, JobFailure::Cancelled);
  EXPECT_EQ(queued->outcome().slot, -1);
  EXPECT_EQ(s.stats().queued, 0u);
  EXPECT_EQ(running->state(), Job::State::Running);
  s.cancel(running);
  EXPECT_EQ(failure_of(*running), JobFailure::Cancelled);
}

TEST(Scheduler, ARequestOverTheBudgetIsRefusedAtOnce) {
  // Room for half a full-cache session: no request can ever run.
  Served sv(
      [](const Model& m) { return estimate_memory(m.config(), 0, memory_query(m, SessionOptions{}, 8)).peak / 2; });
  Scheduler s(sv.model, sv.tmpl, SchedulerOptions{});
  const auto e = refusal(s, completion("Lily", 4));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->failure, JobFailure::OverBudget) << e->what();
  EXPECT_NE(std::string(e->what()).find("device memory"), std::string::npos) << e->what();
  EXPECT_EQ(s.stats().queued, 0u);
}

TEST(Scheduler, PromptsTheContextOrThePolicyCannotTakeAreRefused) {
  Served sv;
  Scheduler s(sv.model, sv.tmpl, SchedulerOptions{});
  std::string words;  // stories260K's context: 2048 positions
  for (int i = 0; i < 2000; ++i) words += "the cat ";
  const auto too_long = refusal(s, completion(words, 4));
  ASSERT_TRUE(too_long);
  EXPECT_EQ(too_long->failure, JobFailure::PromptTooLong) << too_long->what();
  // The session's own refusal passes through by its kind, with the option it is about.
  auto h2o = completion("Once upon a time, there was a little girl", 4);
  h2o->req.kv.policy = KvPolicy::H2O, h2o->req.kv.budget = 16, h2o->req.kv.window = 4;
  h2o->req.kv.h2o_max_prompt = 4;
  const auto refused = refusal(s, h2o);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->failure, JobFailure::Session) << refused->what();
  EXPECT_EQ(refused->kind, ErrorKind::InvalidArgument);
  EXPECT_EQ(refused->param, opt::kv_policy);
}

TEST(Scheduler, StopFinishesTheQueuedJobsAndRefusesNewOnes) {
  Served sv;
  SchedulerOptions so;
  so.parallel = 1;
  Scheduler s(sv.model, sv.tmpl, so);
  auto a = completion("Lily", 8), b = completion("Tom", 8);
  ASSERT_TRUE(accepted(s, a));
  ASSERT_TRUE(accepted(s, b));
  s.stop();
  for (const auto& job : {a, b}) {
    EXPECT_EQ(job->state(), Job::State::Done);
    EXPECT_FALSE(job->error());
    EXPECT_EQ(job->outcome().completion_tokens, 8u);
  }
  const auto e = refusal(s, completion("Sue", 4));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->failure, JobFailure::ShuttingDown) << e->what();
}

TEST(Scheduler, AConversationContinuesFromItsSlotsCache) {
  Served sv;
  SchedulerOptions so;
  so.parallel = 2;
  Scheduler s(sv.model, sv.tmpl, so);
  std::vector<ChatMessage> messages = {
      {"user", "Once upon a time there was a girl named Lily who liked to play in the park with her dog."}};
  auto first = chat(messages, 12);
  ASSERT_TRUE(accepted(s, first));
  ASSERT_EQ(failure_of(*first), std::nullopt);
  const server::Outcome o1 = first->outcome();
  EXPECT_EQ(s.stats().prefill_tokens_saved, 0u);
  messages.push_back({"assistant", o1.text});
  messages.push_back({"user", "What happened next?"});
  auto second = chat(messages, 12);
  ASSERT_TRUE(accepted(s, second));
  ASSERT_EQ(failure_of(*second), std::nullopt);
  const server::Outcome o2 = second->outcome();
  // The slot held the first turn and its answer: only the new messages were prefilled.
  EXPECT_EQ(o2.cached_tokens, o1.prompt_tokens + o1.completion_tokens);
  EXPECT_EQ(o2.slot, o1.slot);
  EXPECT_EQ(s.stats().prefill_tokens_saved, o2.cached_tokens);
  // Another conversation starts afresh: nothing more is saved.
  auto other = chat({{"user", "Hello"}}, 4);
  ASSERT_TRUE(accepted(s, other));
  ASSERT_EQ(failure_of(*other), std::nullopt);
  EXPECT_EQ(other->outcome().cached_tokens, 0u);
  EXPECT_EQ(s.stats().prefill_tokens_saved, o2.cached_tokens);
}

}  // namespace
}  // namespace snapvk::test
