#include "common/hevc/nal_units.h"

#include <vector>

namespace weightcast {

void ForEachNalUnit(
    absl::Span<const uint8_t> bitstream,
    const std::function<void(absl::Span<const uint8_t> unit, int type)>& fn) {
  // Where each unit begins (its start code, with the zero byte before it if
  // there is one) and where its header byte is.
  std::vector<std::pair<size_t, size_t>> starts;
  for (size_t i = 0; i + 3 <= bitstream.size(); ++i) {
    if (bitstream[i] == 0 && bitstream[i + 1] == 0 && bitstream[i + 2] == 1) {
      const size_t begin = i > 0 && bitstream[i - 1] == 0 ? i - 1 : i;
      starts.emplace_back(begin, i + 3);
      i += 2;
    }
  }
  for (size_t k = 0; k < starts.size(); ++k) {
    const size_t end =
        k + 1 < starts.size() ? starts[k + 1].first : bitstream.size();
    const size_t header = starts[k].second;
    const int type = header < end ? (bitstream[header] >> 1) & 0x3f : -1;
    fn(bitstream.subspan(starts[k].first, end - starts[k].first), type);
  }
}

}  // namespace weightcast
