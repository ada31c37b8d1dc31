#include "parallel/expert_placement.h"

#include <algorithm>
#include <utility>

#include "tensor/check.h"

namespace moefold {

int64_t ExpertPlacement::max_slots() const {
  int64_t s = 0;
  for (const std::vector<int64_t>& r : slots) s = std::max<int64_t>(s, r.size());
  return s;
}

int64_t ExpertPlacement::slot_of(int rank, int64_t expert) const {
  const std::vector<int64_t>& s = slots[rank];
  for (size_t i = 0; i < s.size(); ++i)
    if (s[i] == expert) return static_cast<int64_t>(i);
  return -1;
}

int64_t ExpertPlacement::replicas() const {
  int64_t n = 0;
  for (const std::vector<int>& h : holders) n += static_cast<int64_t>(h.size()) - 1;
  return n;
}

uint64_t ExpertPlacement::hash() const {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](int64_t v) {
    for (int b = 0; b < 8; ++b) {
      h ^= static_cast<uint64_t>(v >> (8 * b)) & 0xff;
      h *= 1099511628211ull;
    }
  };
  mix(ranks);
  mix(experts());
  for (int64_t e = 0; e < experts(); ++e) {
    mix(owner[e]);
    mix(static_cast<int64_t>(holders[e].size()));
    for (int r : holders[e]) mix(r);
  }
  return h;
}

std::vector<int> ep_owners(int64_t experts, int ranks) {
  MOEFOLD_CHECK(ranks > 0 && experts % ranks == 0, experts << " experts over " << ranks);
  std::vector<int> owner(experts);
  for (int64_t e = 0; e < experts; ++e) owner[e] = static_cast<int>(e / (experts / ranks));
  return owner;
}

ExpertPlacement make_placement(std::vector<int> owner, std::vector<std::vector<int>> holders,
                               int ranks) {
  const int64_t E = static_cast<int64_t>(owner.size());
  MOEFOLD_CHECK(static_cast<int64_t>(holders.size()) == E);
  ExpertPlacement p;
  p.ranks = ranks;
  p.owner = std::move(owner);
  p.holders = std::move(holders);
  p.slots.assign(ranks, {});
  p.owned.assign(ranks, 0);
  for (int64_t e = 0; e < E; ++e) {
    std::vector<int>& h = p.holders[e];
    std::sort(h.begin(), h.end());
    h.erase(std::unique(h.begin(), h.end()), h.end());
    MOEFOLD_CHECK(p.owner[e] >= 0 && p.owner[e] < ranks, "expert " << e << " owner");
    MOEFOLD_CHECK(std::binary_search(h.begin(), h.end(), p.owner[e]),
                  "expert " << e << " is not held by its owner " << p.owner[e]);
    MOEFOLD_CHECK(h.front() >= 0 && h.back() < ranks, "expert " << e << " holder out of range");
    p.slots[p.owner[e]].push_back(e);
    ++p.owned[p.owner[e]];
  }
  // Replicas after the owned experts, in (owner, expert) order.
  for (int o = 0; o < ranks; ++o) {
    for (int64_t e = 0; e < E; ++e) {
      if (p.owner[e] != o) continue;
      for (int r : p.holders[e])
        if (r != o) p.slots[r].push_back(e);
    }
  }
  return p;
}

int64_t replica_quota(int64_t load, int64_t holders, int64_t i) {
  return load / holders + (i < load % holders ? 1 : 0);
}

std::vector<int64_t> predicted_rank_load(const ExpertPlacement& p,
                                         std::span<const int64_t> load_E) {
  std::vector<int64_t> load(p.ranks, 0);
  for (int64_t e = 0; e < p.experts(); ++e) {
    const std::vector<int>& h = p.holders[e];
    for (size_t i = 0; i < h.size(); ++i) load[h[i]] += replica_quota(load_E[e], h.size(), i);
  }
  return load;
}

namespace {

// (max, ranks at the max): the plan only accepts replicas that lower it lexicographically.
std::pair<int64_t, int> peak(const std::vector<int64_t>& load) {
  const int64_t m = *std::max_element(load.begin(), load.end());
  return {m, static_cast<int>(std::count(load.begin(), load.end(), m))};
}

}  // namespace

ExpertPlacement plan_expert_placement(std::span<const int64_t> load_E, std::vector<int> owner,
                                      int ranks, PlacementBudget budget) {
  const int64_t E = static_cast<int64_t>(owner.size());
  MOEFOLD_CHECK(static_cast<int64_t>(load_E.size()) == E && ranks > 0);
  MOEFOLD_CHECK(budget.spare_slots >= 0 && budget.overlap_degree >= 0);
  std::vector<std::vector<int>> holders(E);
  for (int64_t e = 0; e < E; ++e) holders[e] = {owner[e]};
  ExpertPlacement p = make_placement(owner, holders, ranks);
  const int receive_limit = budget.overlap_degree > 0
                                ? std::min(budget.spare_slots, budget.overlap_degree)
                                : budget.spare_slots;
  const int send_limit = budget.overlap_degree > 0 ? budget.overlap_degree : ranks * ranks;
  std::vector<int> sent(ranks, 0), received(ranks, 0);
  std::vector<int64_t> load = predicted_rank_load(p, load_E);
  while (true) {
    const std::pair<int64_t, int> before = peak(load);
    if (before.first == 0) break;
    const int busiest = static_cast<int>(
        std::find(load.begin(), load.end(), before.first) - load.begin());
    // The busiest rank's experts by decreasing share of its load, lower expert on ties.
    std::vector<std::pair<int64_t, int64_t>> candidates;  // (-share, expert)
    for (int64_t e = 0; e < E; ++e) {
      const std::vector<int>& h = holders[e];
      const auto it = std::find(h.begin(), h.end(), busiest);
      if (it == h.end() || load_E[e] == 0) continue;
      candidates.push_back({-replica_quota(load_E[e], h.size(), it - h.begin()), e});
    }
    std::sort(candidates.begin(), candidates.end());
    bool added = false;
    for (const auto& [negative_share, e] : candidates) {
      if (sent[owner[e]] >= send_limit) continue;
      int target = -1;
      for (int r = 0; r < ranks; ++r) {
        if (received[r] >= receive_limit ||
            std::binary_search(holders[e].begin(), holders[e].end(), r))
          continue;
        if (target < 0 || load[r] < load[target]) target = r;
      }
      if (target < 0) continue;
      std::vector<std::vector<int>> trial_holders = holders;
      std::vector<int>& h = trial_holders[e];
      h.insert(std::upper_bound(h.begin(), h.end(), target), target);
      ExpertPlacement trial = make_placement(owner, trial_holders, ranks);
      std::vector<int64_t> trial_load = predicted_rank_load(trial, load_E);
      if (peak(trial_load) >= before) continue;
      holders = std::move(trial_holders);
      p = std::move(trial);
      load = std::move(trial_load);
      ++sent[owner[e]];
      ++received[target];
      added = true;
      break;
    }
    if (!added) break;
  }
  // A later replica can make an earlier one useless.
  return calibrate_placement(p, load_E);
}

ExpertPlacement calibrate_placement(const ExpertPlacement& placement,
                                    std::span<const int64_t> load_E) {
  const int64_t E = placement.experts();
  MOEFOLD_CHECK(static_cast<int64_t>(load_E.size()) == E);
  ExpertPlacement p = placement;
  std::vector<int64_t> load = predicted_rank_load(p, load_E);
  for (bool dropped = true; dropped;) {
    dropped = false;
    const std::pair<int64_t, int> now = peak(load);
    for (int64_t e = 0; e < E && !dropped; ++e) {
      for (int r : p.holders[e]) {
        if (r == p.owner[e]) continue;
        std::vector<std::vector<int>> trial_holders = p.holders;
        std::erase(trial_holders[e], r);
        ExpertPlacement trial = make_placement(p.owner, trial_holders, p.ranks);
        std::vector<int64_t> trial_load = predicted_rank_load(trial, load_E);
        if (peak(trial_load) > now) continue;
        p = std::move(trial);
        load = std::move(trial_load);
        dropped = true;
        break;
      }
    }
  }
  return p;
}

ReplicaRoutes route_to_replicas(const ExpertPlacement& p, std::span<const int64_t> counts_WE,
                                std::span<const int> node_of_rank) {
  const int W = p.ranks;
  const int64_t E = p.experts();
  MOEFOLD_CHECK(static_cast<int64_t>(counts_WE.size()) == W * E);
  MOEFOLD_CHECK(node_of_rank.empty() || static_cast<int>(node_of_rank.size()) == W);
  auto node = [&](int r) { return node_of_rank.empty() ? 0 : node_of_rank[r]; };
  ReplicaRoutes routes;
  routes.rows.resize(E);
  std::vector<int64_t> left(W), quota;
  for (int64_t e = 0; e < E; ++e) {
    const std::vector<int>& h = p.holders[e];
    const int64_t n = static_cast<int64_t>(h.size());
    std::vector<int64_t>& rows = routes.rows[e];
    rows.assign(W * n, 0);
    int64_t load = 0;
    for (int s = 0; s < W; ++s) {
      left[s] = counts_WE[s * E + e];
      MOEFOLD_CHECK(left[s] >= 0, "negative count from rank " << s);
      load += left[s];
    }
    quota.resize(n);
    for (int64_t i = 0; i < n; ++i) quota[i] = replica_quota(load, n, i);
    auto give = [&](int s, int64_t i) {
      const int64_t take = std::min(left[s], quota[i]);
      rows[s * n + i] += take;
      left[s] -= take;
      quota[i] -= take;
    };
    for (int64_t i = 0; i < n; ++i) give(h[i], i);  // own rank first
    for (int s = 0; s < W; ++s)
      for (int64_t i = 0; i < n && left[s] > 0; ++i)
        if (node(h[i]) == node(s)) give(s, i);  // then the node
    for (int s = 0; s < W; ++s)
      for (int64_t i = 0; i < n && left[s] > 0; ++i) give(s, i);  // then anywhere
  }
  return routes;
}

LoadWindow::LoadWindow(int64_t experts, int window) : window_(window), sum_(experts, 0) {
  MOEFOLD_CHECK(window > 0);
}

void LoadWindow::push(std::span<const int64_t> load_E) {
  MOEFOLD_CHECK(load_E.size() == sum_.size());
  history_.emplace_back(load_E.begin(), load_E.end());
  for (size_t e = 0; e < sum_.size(); ++e) sum_[e] += load_E[e];
  if (static_cast<int>(history_.size()) > window_) {
    for (size_t e = 0; e < sum_.size(); ++e) sum_[e] -= history_.front()[e];
    history_.erase(history_.begin());
  }
}

}  // namespace moefold
