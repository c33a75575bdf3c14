package ruleexpr

import "testing"

func TestSplit(t *testing.T) {
	tests := []struct {
		in        string
		key       string
		op        Op
		value     string
		wantError error
	}{
		{"a==b", "a", Eq, "b", nil},
		{" a != b ", "a", Ne, "b", nil},
		{"a\t==\tb c", "a", Eq, "b c", nil},
		{"a!=b=c", "a", Ne, "b=c", nil},
		{"a==!b", "a", Eq, "!b", nil},
		{"a=b", "", 0, "", ErrNoOperator},
		{"", "", 0, "", ErrNoOperator},
		{"a==b==c", "", 0, "", ErrManyOperators},
		{"a==b!=c", "", 0, "", ErrManyOperators},
		{"a!=b==c", "", 0, "", ErrManyOperators},
		{"==b", "", 0, "", ErrEmptyKey},
		{"  !=b", "", 0, "", ErrEmptyKey},
		{"a! ==b", "", 0, "", ErrKeyOperator},
		{"a= !=b", "", 0, "", ErrKeyOperator},
		{"a==", "", 0, "", ErrEmptyValue},
		{"a==  ", "", 0, "", ErrEmptyValue},
		{"a==b\x00", "", 0, "", ErrControlChar},
		{"a==b\x7fc", "", 0, "", ErrControlChar},
	}
	for _, tt := range tests {
		k, op, v, err := Split(tt.in)
		if err != tt.wantError || k != tt.key || op != tt.op || v != tt.value {
			t.Errorf("Split(%q) = %q, %v, %q, %v; want %q, %v, %q, %v", tt.in, k, op, v, err, tt.key, tt.op, tt.value, tt.wantError)
		}
	}
}

func FuzzSplit(f *testing.F) {
	for _, s := range []string{"a==b", "a!=b", "==", "a==b!=c", " k != v "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, op, v, err := Split(s)
		if err != nil {
			return
		}
		// The joined form splits back to the same parts.
		k2, op2, v2, err := Split(k + op.String() + v)
		if err != nil || k2 != k || op2 != op || v2 != v {
			t.Fatalf("Split(%q) = %q %v %q; joined it splits to %q %v %q, %v", s, k, op, v, k2, op2, v2, err)
		}
	})
}
