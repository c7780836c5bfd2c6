// Test helper: an empty directory under the build tree's test-tmp/, made anew
// for each test.
#ifndef WEIGHTCAST_TESTS_TESTING_FRESH_DIR_H_
#define WEIGHTCAST_TESTS_TESTING_FRESH_DIR_H_

#include <filesystem>
#include <string>

#include "tests/testing/paths.h"

namespace weightcast {

inline std::string FreshDir(const std::string& name) {
  const std::string dir = BuildDir() + "/test-tmp/" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace weightcast

#endif  // WEIGHTCAST_TESTS_TESTING_FRESH_DIR_H_
