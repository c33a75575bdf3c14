package bench

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestRunSetsNameRealBenchmarks keeps bench/run.sh (what make bench runs)
// and bench/README.md in step with the code: every set names a package
// that exists and benchmarks it declares, and the README documents every
// set. A renamed benchmark otherwise makes a set run nothing, silently.
func TestRunSetsNameRealBenchmarks(t *testing.T) {
	script, err := os.ReadFile("run.sh")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	// "name|needs|package|-bench REGEXP more flags"
	set := regexp.MustCompile(`(?m)^\s*"([a-z]+)\|[^|]*\|(\./[^|]*)\|-bench (\S+)`)
	sets := set.FindAllStringSubmatch(string(script), -1)
	if len(sets) < 10 {
		t.Fatalf("found %d sets in run.sh: the pattern no longer matches its table", len(sets))
	}
	for _, s := range sets {
		name, pkg, benchmarks := s[1], s[2], strings.TrimSuffix(s[3], `"`)
		var src strings.Builder
		tests, _ := filepath.Glob(filepath.Join("..", pkg, "*_test.go"))
		if len(tests) == 0 {
			t.Errorf("set %s: no test files in %s", name, pkg)
		}
		for _, f := range tests {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			src.Write(b)
		}
		// A set may name several benchmarks, "A|B", in its -bench word;
		// each must be declared.
		for _, fn := range strings.Split(benchmarks, "|") {
			if !strings.Contains(src.String(), "func "+fn+"(b *testing.B)") {
				t.Errorf("set %s: %s declares no func %s(b *testing.B)", name, pkg, fn)
			}
		}
		if !strings.Contains(string(readme), "`"+name+"`") {
			t.Errorf("set %s is not in bench/README.md", name)
		}
	}
}
