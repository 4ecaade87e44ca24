#include "tests/cli_runner.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <thread>

#include "runtime/error.h"
#include "tests/test_util.h"

extern char** environ;

namespace snapvk::test {

namespace fs = std::filesystem;

std::string cli_path() { return (fs::canonical("/proc/self/exe").parent_path().parent_path() / "snapvk").string(); }

namespace {
CliResult run(const std::vector<std::string>& args, int timeout_s, const std::string* input) {
  static int n = 0;
  const fs::path dir = fs::temp_directory_path() / ("snapvk-cli-" + std::to_string(getpid()));
  fs::create_directories(dir);
  const std::string out = (dir / ("out" + std::to_string(n))).string(),
                    err = (dir / ("err" + std::to_string(n))).string();
  ++n;
  std::vector<std::string> all = {cli_path()};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  int pipe_fds[2] = {-1, -1};
  if (input) {
    if (pipe2(pipe_fds, O_CLOEXEC) != 0)
      throw Error(ErrorKind::InvalidArgument, std::string("pipe: ") + std::strerror(errno));
    posix_spawn_file_actions_adddup2(&fa, pipe_fds[0], 0);
    posix_spawn_file_actions_addclose(&fa, pipe_fds[0]);
    posix_spawn_file_actions_addclose(&fa, pipe_fds[1]);
  } else {
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  }
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, all[0].c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (input) {
    close(pipe_fds[0]);
    std::signal(SIGPIPE, SIG_IGN);  // a child that exits early must not end the tests
    for (size_t done = 0; rc == 0 && done < input->size();) {
      const ssize_t w = write(pipe_fds[1], input->data() + done, input->size() - done);
      if (w <= 0) break;
      done += size_t(w);
    }
    close(pipe_fds[1]);
  }
  if (rc != 0) throw Error(ErrorKind::Io, "cannot start " + all[0] + ": " + std::strerror(rc));
  CliResult r;
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);  // our own child, by its pid
      waitpid(pid, &status, 0);
      r.timed_out = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  r.exited = WIFEXITED(status);
  r.code = r.exited ? WEXITSTATUS(status) : -1;
  r.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  r.out = slurp(out), r.err = slurp(err);
  fs::remove(out), fs::remove(err);
  return r;
}
}  // namespace

CliResult run_cli(const std::vector<std::string>& args, int timeout_s) { return run(args, timeout_s, nullptr); }

CliResult run_cli_with_input(const std::vector<std::string>& args, const std::string& input, int timeout_s) {
  return run(args, timeout_s, &input);
}

}  // namespace snapvk::test
