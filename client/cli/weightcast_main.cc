// weightcast: the command-line client. See client/cli/cli.h.
#include <unistd.h>

#include <iostream>

#include "client/cli/cli.h"
#include "common/base/allocator.h"

int main(int argc, char** argv) {
  weightcast::MapLargeAllocations();
  return weightcast::RunCli(std::vector<std::string>(argv + 1, argv + argc),
                            std::cout, std::cerr, isatty(STDOUT_FILENO) != 0);
}
