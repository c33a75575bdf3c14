package admin_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/internal/testutil/benchinfo"
	"github.com/lockbox-project/lockbox/manager/admin"
)

// benchSize is a typical secret: a key or a certificate.
const benchSize = 1024

// BenchmarkSecretCreate measures secret create throughput through the
// Admin gRPC service (validate, seal, one etcd transaction) on embedded
// etcd, against a raw etcd Put of the same size on the same etcd in the
// same run. Compare the two ops/s; the ratio is the cost of Lockbox.
// The parallel pair runs 16 concurrent callers (8 x GOMAXPROCS 2), as
// several operators or scripts would; the serial pair one caller.
func BenchmarkSecretCreate(b *testing.B) {
	e := newEnv(b, admin.Config{}, "")
	data := make([]byte, benchSize)
	var seq atomic.Int64

	b.Run("baseline=etcd-put", func(b *testing.B) {
		cli := e.store.Client()
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := cli.Put(context.Background(), fmt.Sprintf("/bench/%d", seq.Add(1)), string(data)); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		benchinfo.Print(b)
	})
	b.Run("admin-create", func(b *testing.B) {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_, err := e.client.CreateSecret(context.Background(), &adminapi.CreateSecretRequest{
					Spec: &types.SecretSpec{Name: fmt.Sprintf("bench%d", seq.Add(1))},
					Data: append([]byte(nil), data...),
				})
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		benchinfo.Print(b)
	})
	b.Run("baseline=etcd-put-serial", func(b *testing.B) {
		cli := e.store.Client()
		for b.Loop() {
			if _, err := cli.Put(context.Background(), fmt.Sprintf("/bench/%d", seq.Add(1)), string(data)); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		benchinfo.Print(b)
	})
	b.Run("admin-create-serial", func(b *testing.B) {
		for b.Loop() {
			_, err := e.client.CreateSecret(context.Background(), &adminapi.CreateSecretRequest{
				Spec: &types.SecretSpec{Name: fmt.Sprintf("bench%d", seq.Add(1))},
				Data: append([]byte(nil), data...),
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		benchinfo.Print(b)
	})
}
