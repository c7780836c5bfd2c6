// Tests that inject a fault or feed bad input record what they tried and what
// the system answered, one JSON line per case, in BINARY_DIR/reliability/<test
// suite>.<test>.jsonl. scripts/reliability turns them into docs/RELIABILITY.md.
// Header-only; not thread-safe.
#ifndef WEIGHTCAST_TESTS_TESTING_RELIABILITY_LOG_H_
#define WEIGHTCAST_TESTS_TESTING_RELIABILITY_LOG_H_

#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/paths.h"

namespace weightcast {

// `fault`: the bad input or fault; `answer`: what the system said or did;
// `kept`: what was checked to be intact afterwards.
inline void RecordReliability(const std::string& fault,
                              const std::string& answer,
                              const std::string& kept) {
  const ::testing::TestInfo* test =
      ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string name =
      std::string(test->test_suite_name()) + "." + test->name();
  const std::string dir = BuildDir() + "/reliability";
  std::filesystem::create_directories(dir);
  static std::string
      started;  // a test's first record replaces the file its last run left
  const bool first = started != name;
  started = name;
  std::ofstream out(dir + "/" + name + ".jsonl",
                    first ? std::ios::trunc : std::ios::app);
  out << nlohmann::json{{"test", name},
                        {"fault", fault},
                        {"answer", answer},
                        {"kept", kept}}
             .dump()
      << "\n";
}

}  // namespace weightcast

#endif  // WEIGHTCAST_TESTS_TESTING_RELIABILITY_LOG_H_
