// Where a test finds the build tree and the checkpoints the fixture script
// wrote. The paths are compiled into paths.cc alone, so that every test file
// compiles to the same object in any clone of the repository and the compiler
// cache (ccache, base_dir = the source tree) shares it.
#ifndef WEIGHTCAST_TESTS_TESTING_PATHS_H_
#define WEIGHTCAST_TESTS_TESTING_PATHS_H_

#include <string>

namespace weightcast {

// The CMake build tree the test was built in (e.g. build/ or build-asan/).
std::string BuildDir();

// BuildDir()/fixtures: the checkpoints tests/fixtures/make_checkpoints.py
// wrote.
std::string FixtureDir();

}  // namespace weightcast

#endif  // WEIGHTCAST_TESTS_TESTING_PATHS_H_
