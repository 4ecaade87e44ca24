#pragma once
// Writing report files: one place that creates the directory and turns I/O failures into
// one-line errors naming the path.
#include <string>
#include <utility>
#include <vector>

namespace snapvk {

// Writes each (name, contents) into dir (created if missing); returns the paths written.
std::vector<std::string> write_files(const std::string& dir,
                                     const std::vector<std::pair<std::string, std::string>>& files);
// Writes one file.
void write_file(const std::string& path, const std::string& contents);

}  // namespace snapvk
