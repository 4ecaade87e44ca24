#include "host/report/files.h"

#include <filesystem>
#include <fstream>

#include "runtime/error.h"

namespace snapvk {

void write_file(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary);
  if (!out) throw Error(ErrorKind::Io, "cannot write '" + path + "'");
  out << contents;
  out.flush();
  if (!out) throw Error(ErrorKind::Io, "error writing '" + path + "'");
}

std::vector<std::string> write_files(const std::string& dir,
                                     const std::vector<std::pair<std::string, std::string>>& files) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error(ErrorKind::Io, "cannot create directory '" + dir + "': " + ec.message());
  std::vector<std::string> paths;
  for (const auto& [name, text] : files) {
    paths.push_back((std::filesystem::path(dir) / name).string());
    write_file(paths.back(), text);
  }
  return paths;
}

}  // namespace snapvk
