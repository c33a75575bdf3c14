package linux

import (
	"testing"

	"github.com/lockbox-project/lockbox/mounter"
)

func TestMapID(t *testing.T) {
	maps := []mounter.IDMapping{
		{ContainerID: 0, HostID: 100000, Size: 1000},
		{ContainerID: 1000, HostID: 5000, Size: 1},
		{ContainerID: 2000, HostID: 4294967000, Size: 1000},
	}
	tests := []struct {
		name string
		ms   []mounter.IDMapping
		id   uint32
		want uint32
		ok   bool
	}{
		{"no user namespace", nil, 1234, 1234, true},
		{"first range start", maps, 0, 100000, true},
		{"first range end", maps, 999, 100999, true},
		{"single id", maps, 1000, 5000, true},
		{"gap", maps, 1001, 0, false},
		{"past the last range", maps, 3000, 0, false},
		{"maps onto -1", maps, 2295, 0, false},
		{"below -1", maps, 2294, 4294967294, true},
		{"empty range", []mounter.IDMapping{{ContainerID: 5, HostID: 5, Size: 0}}, 5, 0, false},
		{"range at the top", []mounter.IDMapping{{ContainerID: 4294967290, HostID: 10, Size: 100}}, 4294967294, 14, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := mapID(tt.id, tt.ms)
			if got != tt.want || ok != tt.ok {
				t.Errorf("mapID(%d) = %d, %v; want %d, %v", tt.id, got, ok, tt.want, tt.ok)
			}
		})
	}
}
