// A raw grpc.reflection.v1alpha list_services call, for tests that check what a
// server's reflection answers (no generated reflection stubs ship with Debian's
// gRPC). Header-only.
#ifndef WEIGHTCAST_TESTS_TESTING_REFLECTION_H_
#define WEIGHTCAST_TESTS_TESTING_REFLECTION_H_

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace weightcast {

// The raw ServerReflectionResponse bytes of a list_services request (they hold
// the service names); empty when the server does not serve reflection.
inline std::string ReflectionListServices(
    const std::shared_ptr<grpc::Channel>& channel) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  grpc::CompletionQueue queue;
  auto call = stub.PrepareCall(
      &context,
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &queue);
  void* tag = nullptr;
  bool ok = false;
  call->StartCall(reinterpret_cast<void*>(1));
  queue.Next(&tag, &ok);
  const std::string request("\x3a\x00",
                            2);  // field 7 (list_services), empty string
  grpc::Slice slice(request);
  grpc::ByteBuffer out(&slice, 1), in;
  call->Write(out, reinterpret_cast<void*>(2));
  queue.Next(&tag, &ok);
  call->Read(&in, reinterpret_cast<void*>(3));
  queue.Next(&tag, &ok);
  std::string bytes;
  if (ok) {
    std::vector<grpc::Slice> slices;
    in.Dump(&slices);
    for (const grpc::Slice& s : slices)
      bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  context.TryCancel();
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(4));
  queue.Next(&tag, &ok);
  queue.Shutdown();
  while (queue.Next(&tag, &ok)) {
  }
  return bytes;
}

}  // namespace weightcast

#endif  // WEIGHTCAST_TESTS_TESTING_REFLECTION_H_
