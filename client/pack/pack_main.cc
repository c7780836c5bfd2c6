// weightcast-pack: see kPackUsage. Exit codes: 0 ok, 2 usage, 3 input not
// found, 4 bad or damaged input, 1 anything else.
#include <iostream>

#include "client/pack/pack_command.h"

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  auto command = weightcast::ParsePackCommand(args);
  if (!command.ok()) {
    std::cerr << "weightcast-pack: " << command.status().message() << "\n\n"
              << weightcast::kPackUsage;
    return 2;
  }
  const absl::Status status = weightcast::RunPackCommand(*command, std::cout);
  if (status.ok()) return 0;
  std::cerr << "weightcast-pack: " << status.message() << "\n";
  switch (status.code()) {
    case absl::StatusCode::kNotFound:
      return 3;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kDataLoss:
      return 4;
    default:
      return 1;
  }
}
