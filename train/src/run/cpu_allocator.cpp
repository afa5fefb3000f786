// mvdrive's CPU allocator for libtorch tensors: large blocks are mapped with mmap, kept
// after they are freed, and handed out again to a request of about the same size, so a
// training step that repeats the last one's allocations (every step does) neither
// page-faults fresh memory nor leaves it fragmented in malloc's heap. A request takes the
// smallest free block that fits it and wastes at most a third of it (half when the cache
// is at its bound; sizes are rounded to pages). The cache is bounded by the high-water mark of live
// bytes: mapped bytes never exceed the most that was ever live at once, because a miss
// that would go above it first unmaps free blocks, least recently freed first. Blocks
// under `min_bytes` go to c10's own alloc_cpu (malloc).
// See train/src/run/allocator.rs for why and for the figures.
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>

#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <list>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace {

constexpr size_t kPage = 4096;
constexpr size_t kHuge = size_t(2) << 20;

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

struct Stats {
  uint64_t live, mapped, peak_live, peak_mapped, hits, misses, unmapped;
};

class CachingCpuAllocator final : public c10::Allocator {
 public:
  explicit CachingCpuAllocator(size_t min_bytes) : min_bytes_(min_bytes) {}

  c10::DataPtr allocate(size_t n) override {
    if (n < min_bytes_) {
      void* p = c10::alloc_cpu(n);
      return {p, p, &free_small, c10::Device(c10::DeviceType::CPU)};
    }
    // Page-rounded only: rounding to 2 MiB wasted up to half of a 2-4 MiB block (R(2+1)D's
    // weights and moments are many such). A mapping's 2 MiB-aligned part still gets huge
    // pages; its tail gets small ones.
    size_t r = round_up(n, kPage);
    void* p = take(r);
    if (p == nullptr) {
      // take() reserved `r` bytes (mapped and live) under the lock, so that concurrent
      // misses each make room for themselves; map outside the lock.
      try {
        p = map(r);
      } catch (...) {
        std::lock_guard<std::mutex> g(mu_);
        mapped_ -= r;
        live_ -= r;
        throw;
      }
      std::lock_guard<std::mutex> g(mu_);
      blocks_[p] = {r, true};
    }
    return {p, p, &free_large, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &free_any; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  /// Unmaps every free block.
  void trim() {
    std::lock_guard<std::mutex> g(mu_);
    while (!lru_.empty()) evict_oldest();
  }

  Stats stats() {
    std::lock_guard<std::mutex> g(mu_);
    return {live_, mapped_, peak_live_, peak_mapped_, hits_, misses_, unmapped_};
  }

  void reset_peaks() {
    std::lock_guard<std::mutex> g(mu_);
    peak_live_ = live_;
    peak_mapped_ = mapped_;
  }

  bool owns(void* p) {
    std::lock_guard<std::mutex> g(mu_);
    return blocks_.count(p) != 0;
  }

  void release(void* p) {
    std::lock_guard<std::mutex> g(mu_);
    auto it = blocks_.find(p);
    TORCH_CHECK(it != blocks_.end(), "mvdrive CPU allocator: freeing an unknown block");
    TORCH_CHECK(it->second.in_use, "mvdrive CPU allocator: freeing a block twice");
    size_t r = it->second.size;
    live_ -= r;
    it->second.in_use = false;
    lru_.push_back({p, r});
    free_by_size_[r].push_back(std::prev(lru_.end()));
  }

 private:
  struct Free {
    void* p;
    size_t size;
  };

  static void free_small(void* p) { c10::free_cpu(p); }
  static void free_large(void* p);
  static void free_any(void* p);

  // A free block for `r` bytes, or null after making room for a fresh one of `r` bytes
  // under the ceiling (the most ever live at once, counting this request) and reserving
  // it: the smallest free block of `r` to `r * 4 / 3` bytes (the most recently freed of
  // its size); else, if a fresh block would go above the ceiling, the smallest larger
  // free block (already resident: wasting part of it costs no memory, a fresh one would);
  // else null, after unmapping the least recently freed blocks until a fresh one fits.
  // Live bytes count whole blocks, so mapped bytes (live plus free) stay under the most
  // ever live.
  void* take(size_t r) {
    std::lock_guard<std::mutex> g(mu_);
    auto it = free_by_size_.lower_bound(r);
    uint64_t ceiling = std::max(peak_live_, live_ + r);
    bool fits = it != free_by_size_.end() && it->first <= r + r / 3;
    bool at_ceiling = mapped_ + r > ceiling;
    if (!fits && at_ceiling && it != free_by_size_.end() && it->first <= 2 * r) fits = true;
    if (fits) {
      auto node = it->second.back();
      it->second.pop_back();
      if (it->second.empty()) free_by_size_.erase(it);
      void* p = node->p;
      Block& b = blocks_[p];
      b.in_use = true;
      live_ += b.size;
      peak_live_ = std::max(peak_live_, live_);
      lru_.erase(node);
      hits_++;
      return p;
    }
    misses_++;
    while (!lru_.empty() && mapped_ + r > ceiling) evict_oldest();
    mapped_ += r;
    live_ += r;
    peak_live_ = std::max(peak_live_, live_);
    peak_mapped_ = std::max(peak_mapped_, mapped_);
    return nullptr;
  }

  void evict_oldest() {
    Free f = lru_.front();
    auto it = free_by_size_.find(f.size);
    auto& v = it->second;
    for (auto i = v.begin(); i != v.end(); ++i) {
      if (*i == lru_.begin()) {
        v.erase(i);
        break;
      }
    }
    if (v.empty()) free_by_size_.erase(it);
    lru_.pop_front();
    blocks_.erase(f.p);
    mapped_ -= f.size;
    unmapped_ += f.size;
    munmap(f.p, f.size);
  }

  // A fresh mapping of `r` bytes; from 2 MiB up, aligned to 2 MiB and advised as huge
  // pages, so that first touches fault 2 MiB at a time.
  static void* map(size_t r) {
    if (r < kHuge) {
      void* p = mmap(nullptr, r, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      TORCH_CHECK(p != MAP_FAILED, "mvdrive CPU allocator: out of memory mapping ", r,
                  " bytes: ", std::strerror(errno));
      return p;
    }
    size_t span = r + kHuge;
    void* raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    TORCH_CHECK(raw != MAP_FAILED, "mvdrive CPU allocator: out of memory mapping ", r,
                " bytes: ", std::strerror(errno));
    uintptr_t start = reinterpret_cast<uintptr_t>(raw);
    uintptr_t aligned = round_up(start, kHuge);
    if (aligned > start) munmap(raw, aligned - start);
    size_t tail = (start + span) - (aligned + r);
    if (tail > 0) munmap(reinterpret_cast<void*>(aligned + r), tail);
    void* p = reinterpret_cast<void*>(aligned);
    madvise(p, r, MADV_HUGEPAGE);
    return p;
  }

  const size_t min_bytes_;
  std::mutex mu_;
  // Every mapped block: its size and whether a tensor holds it.
  struct Block {
    size_t size;
    bool in_use;
  };
  std::unordered_map<void*, Block> blocks_;
  std::list<Free> lru_;
  std::map<size_t, std::vector<std::list<Free>::iterator>> free_by_size_;
  uint64_t live_ = 0, mapped_ = 0, peak_live_ = 0, peak_mapped_ = 0;
  uint64_t hits_ = 0, misses_ = 0, unmapped_ = 0;
};

CachingCpuAllocator* g_alloc = nullptr;

void CachingCpuAllocator::free_large(void* p) { g_alloc->release(p); }

void CachingCpuAllocator::free_any(void* p) {
  if (g_alloc->owns(p)) {
    g_alloc->release(p);
  } else {
    c10::free_cpu(p);
  }
}

}  // namespace

extern "C" {

/// Installs the allocator as libtorch's CPU allocator (once; later calls do nothing).
/// Blocks under `min_bytes` go to malloc. Returns 0, or 1 if it was already installed.
int mvdrive_cpu_allocator_install(uint64_t min_bytes) {
  if (g_alloc != nullptr) return 1;
  // Never destroyed: tensors may outlive every Rust object, up to process exit.
  g_alloc = new CachingCpuAllocator(min_bytes);
  c10::SetCPUAllocator(g_alloc, /*priority=*/100);
  return 0;
}

/// Fills `out` with live, mapped, peak live, peak mapped, hits, misses, unmapped bytes.
/// Returns 0, or 1 (zeros) when the allocator is not installed.
int mvdrive_cpu_allocator_stats(uint64_t* out) {
  if (g_alloc == nullptr) {
    std::memset(out, 0, 7 * sizeof(uint64_t));
    return 1;
  }
  Stats s = g_alloc->stats();
  out[0] = s.live;
  out[1] = s.mapped;
  out[2] = s.peak_live;
  out[3] = s.peak_mapped;
  out[4] = s.hits;
  out[5] = s.misses;
  out[6] = s.unmapped;
  return 0;
}

/// Unmaps every free block (e.g. before a phase with other tensor sizes, like evaluation).
void mvdrive_cpu_allocator_trim() {
  if (g_alloc != nullptr) g_alloc->trim();
}

/// Starts the peaks again from the current figures.
void mvdrive_cpu_allocator_reset_peaks() {
  if (g_alloc != nullptr) g_alloc->reset_peaks();
}

}  // extern "C"
