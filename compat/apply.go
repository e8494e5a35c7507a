package compat

import (
	"fmt"
	"slices"
	"strings"
)

// client is the part of go-iptables' *iptables.IPTables the enforcer uses.
type client interface {
	List(table, chain string) ([]string, error)
	Insert(table, chain string, pos int, rulespec ...string) error
	Append(table, chain string, rulespec ...string) error
	Delete(table, chain string, rulespec ...string) error
	DeleteById(table, chain string, id int) error
	ChainExists(table, chain string) (bool, error)
	NewChain(table, chain string) error
	ClearAndDeleteChain(table, chain string) error
	ChangePolicy(table, chain, target string) error
}

// ruleKey identifies a rule regardless of its placement.
type ruleKey struct {
	IPv6               bool `json:",omitempty"`
	Table, Chain, Spec string
}

func keyOf(r Rule) ruleKey { return ruleKey{r.IPv6, r.Table, r.Chain, r.Spec} }

// chainKey is a chain of a family's table.
type chainKey struct {
	ipv6         bool
	table, chain string
}

// listSpecs returns the rules of a chain as specs (without "-A CHAIN").
func listSpecs(ipt client, table, chain string) ([]string, error) {
	lines, err := ipt.List(table, chain)
	if err != nil {
		return nil, fmt.Errorf("list %s %s: %w", table, chain, err)
	}
	var specs []string
	for _, l := range lines {
		if s, ok := strings.CutPrefix(l, "-A "+chain+" "); ok {
			specs = append(specs, s)
		}
	}
	return specs, nil
}

// syncChain brings the rules of one chain that are in want to their
// rendered places without touching rules that are not ours: missing rules
// are inserted right below the previous rendered rule (or appended, or
// moved back to the top, per their Placement) and duplicate copies of ours
// are deleted. Rules of ours that exist are never removed and re-added, so
// a sync does not open a window in which traffic meets no rule.
func syncChain(ipt client, table, chain string, want []Rule) error {
	cur, err := listSpecs(ipt, table, chain)
	if err != nil {
		return err
	}
	for _, r := range want {
		// Keep the first copy, delete later ones by their rule number.
		for count(cur, r.Spec) > 1 {
			i := lastIndex(cur, r.Spec)
			if err := ipt.DeleteById(table, chain, i+1); err != nil {
				return fmt.Errorf("delete duplicate %s: %w", r, err)
			}
			cur = slices.Delete(cur, i, i+1)
		}
	}
	prev, top := -1, 0
	for _, r := range want {
		idx := slices.Index(cur, r.Spec)
		switch r.Place {
		case Top:
			if idx != top {
				if idx >= 0 {
					if err := ipt.Delete(table, chain, strings.Fields(r.Spec)...); err != nil {
						return fmt.Errorf("move %s: %w", r, err)
					}
					cur = slices.Delete(cur, idx, idx+1)
				}
				if err := ipt.Insert(table, chain, top+1, strings.Fields(r.Spec)...); err != nil {
					return fmt.Errorf("insert %s: %w", r, err)
				}
				cur = slices.Insert(cur, top, r.Spec)
			}
			idx = top
			top++
		case Insert:
			if idx < 0 {
				idx = prev + 1
				if err := ipt.Insert(table, chain, idx+1, strings.Fields(r.Spec)...); err != nil {
					return fmt.Errorf("insert %s: %w", r, err)
				}
				cur = slices.Insert(cur, idx, r.Spec)
			}
		case Append:
			if idx < 0 {
				if err := ipt.Append(table, chain, strings.Fields(r.Spec)...); err != nil {
					return fmt.Errorf("append %s: %w", r, err)
				}
				cur = append(cur, r.Spec)
				idx = len(cur) - 1
			}
		}
		prev = idx
	}
	return nil
}

func count(list []string, s string) int {
	n := 0
	for _, v := range list {
		if v == s {
			n++
		}
	}
	return n
}

func lastIndex(list []string, s string) int {
	for i := len(list) - 1; i >= 0; i-- {
		if list[i] == s {
			return i
		}
	}
	return -1
}

// deleteRule removes every copy of a rule; a missing rule is not an error.
func deleteRule(ipt client, k ruleKey) error {
	specs, err := listSpecs(ipt, k.Table, k.Chain)
	if err != nil {
		return err
	}
	for i := count(specs, k.Spec); i > 0; i-- {
		if err := ipt.Delete(k.Table, k.Chain, strings.Fields(k.Spec)...); err != nil {
			return fmt.Errorf("delete -A %s %s: %w", k.Chain, k.Spec, err)
		}
	}
	return nil
}

// groups splits rules by chain (of a family's table), in order of first
// appearance.
func groups(rules []Rule) [][]Rule {
	var out [][]Rule
	at := map[chainKey]int{}
	for _, r := range rules {
		k := chainKey{r.IPv6, r.Table, r.Chain}
		i, ok := at[k]
		if !ok {
			i = len(out)
			at[k] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], r)
	}
	return out
}
