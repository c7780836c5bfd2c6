#include "tests/testing/paths.h"

namespace weightcast {

std::string BuildDir() { return WEIGHTCAST_BINARY_DIR; }

std::string FixtureDir() { return WEIGHTCAST_FIXTURE_DIR; }

}  // namespace weightcast
