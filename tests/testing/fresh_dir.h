// Test helper: an empty directory under the build tree's test-tmp/, made anew
// for each test. Header-only; needs WEIGHTCAST_BINARY_DIR, which
// weightcast_test() defines.
#ifndef WEIGHTCAST_TESTS_TESTING_FRESH_DIR_H_
#define WEIGHTCAST_TESTS_TESTING_FRESH_DIR_H_

#include <filesystem>
#include <string>

namespace weightcast {

inline std::string FreshDir(const std::string& name) {
  const std::string dir =
      std::string(WEIGHTCAST_BINARY_DIR "/test-tmp/") + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace weightcast

#endif  // WEIGHTCAST_TESTS_TESTING_FRESH_DIR_H_
