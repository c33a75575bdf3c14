package manager

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/internal/identity"
	"github.com/lockbox-project/lockbox/manager/ca"
	"github.com/lockbox-project/lockbox/manager/etcd"
	"github.com/lockbox-project/lockbox/manager/keys"
	"github.com/lockbox-project/lockbox/manager/store"
)

// start brings up etcd and the keys: first start (init or join) or restart.
func (m *Manager) start(ctx context.Context) error {
	st, err := m.loadState()
	if err != nil {
		return err
	}
	if st == nil {
		if err := m.listenTCP(); err != nil {
			return err
		}
		if m.cfg.JoinAddr != "" {
			return m.join(ctx)
		}
		return m.initialize(ctx)
	}
	if m.cfg.JoinAddr != "" {
		m.log.Warn("--join is ignored: this data dir already belongs to a cluster", "cluster", st.ClusterID)
	}
	m.st = st
	m.nodeKey = newNodeKey(m.cfg.DataDir, st.Autolock)
	var kek *keys.KEK
	if st.Autolock {
		// Nothing listens on TCP and etcd stays down until the key
		// files open.
		if kek, err = m.awaitUnlock(ctx, m.nodeKey.open); err != nil {
			return err
		}
		defer kek.Zero()
	} else if err := m.nodeKey.open(nil); err != nil {
		return err
	}
	if err := m.listenTCP(); err != nil {
		return err
	}
	return m.restart(ctx, kek)
}

// listenTCP binds the TCP listener and works out the advertised address.
func (m *Manager) listenTCP() (err error) {
	m.listener, err = net.Listen("tcp", m.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("manager: listen on %s: %w", m.cfg.ListenAddr, err)
	}
	m.advertise, err = advertiseAddr(m.cfg.AdvertiseAddr, m.listener.Addr().String())
	return err
}

func (m *Manager) startEtcd(ctx context.Context, initialCluster string) error {
	if len(m.cfg.EtcdEndpoints) > 0 {
		cli, err := etcd.Connect(ctx, m.cfg.EtcdEndpoints, m.cfg.EtcdTLS)
		if err != nil {
			return fmt.Errorf("manager: %w", err)
		}
		m.openStore(store.New(cli, nil))
		return nil
	}
	if err := m.ensureCRLFile(); err != nil {
		return err
	}
	peerTLS, err := m.nodeKey.etcdFiles()
	if err != nil {
		return err
	}
	peerTLS.CRLFile = m.crlFile()
	member, err := etcd.Start(ctx, etcd.Config{
		Dir:            m.path("etcd"),
		Name:           m.st.NodeID,
		PeerURL:        m.st.PeerURL,
		PeerTLS:        peerTLS,
		InitialCluster: initialCluster,
		Logger:         m.cfg.EtcdLogger,
	})
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	m.member = member
	m.openStore(store.New(member.Client(), nil))
	go m.followCRL(ctx)
	return nil
}

// initialize creates a new cluster: CA, data keys, tokens, the manager's
// own node and admin credentials.
func (m *Manager) initialize(ctx context.Context) error {
	root, err := ca.NewRoot()
	if err != nil {
		return err
	}
	nodeID := identity.NewID()
	m.st = &state{NodeID: nodeID, ClusterID: root.ClusterID, Autolock: m.cfg.Autolock}
	if len(m.cfg.EtcdEndpoints) == 0 {
		if m.st.PeerURL, err = m.peerURL(); err != nil {
			return err
		}
	}
	req, err := m.ownCertRequest(nodeID)
	if err != nil {
		return err
	}
	own, err := root.NewKeyPair(req)
	if err != nil {
		return err
	}
	var kek *keys.KEK
	unlockKey := ""
	if m.cfg.Autolock {
		if unlockKey, err = keys.NewUnlockKey(); err != nil {
			return err
		}
		kek, err = keys.KEKFromUnlockKey(unlockKey)
	} else {
		kek, err = keys.CreateKeyFile(m.path("kek"))
	}
	if err != nil {
		return err
	}
	defer kek.Zero()
	m.nodeKey = newNodeKey(m.cfg.DataDir, m.cfg.Autolock)
	m.nodeKey.useKEK(kek)
	if err := m.nodeKey.store(own.CertPEM, own.KeyPEM, root.CertPEM); err != nil {
		return err
	}
	if err := m.startEtcd(ctx, ""); err != nil {
		return err
	}
	m.keys.OnKEKChange(m.kekChanged)
	created, err := m.keys.Bootstrap(ctx, kek, unlockKey)
	if err != nil {
		return fmt.Errorf("manager: create data keys: %w", err)
	}
	if !created {
		return errors.New("manager: etcd already holds a Lockbox cluster: join it with --join and a manager token")
	}
	if err := ca.Save(ctx, m.store, m.keys, root); err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	st := m.store
	ownCert, _ := parsePEMCert(own.CertPEM)
	if err := st.RecordCertificate(ctx, nodeID, store.IssuedCert{Serial: ownCert.SerialNumber.Text(16), NotAfter: ownCert.NotAfter, Peer: true}); err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	if _, err := st.CreateNode(ctx, &types.Node{
		Id:          nodeID,
		Role:        types.NodeRole_NODE_ROLE_MANAGER,
		Description: describeSelf(),
		State:       types.NodeState_NODE_STATE_READY,
		LastSeen:    timestamppb.Now(),
		Certificate: certInfo(ownCert),
		Addr:        m.advertise,
	}); err != nil {
		return fmt.Errorf("manager: record own node: %w", err)
	}
	if err := m.writeInitAdminCredentials(root); err != nil {
		return err
	}
	if err := m.saveState(m.st); err != nil {
		return err
	}
	if m.cfg.Autolock {
		fmt.Fprintf(m.cfg.Out, "Autolock is on. Keep this unlock key safe; it is shown only now:\n\n    %s\n\nA restarted manager serves nothing until 'lockbox unlock' is given this key.\n\nNo admin key is kept on disk: for tcp:// admin access, issue short-lived\ncredentials with 'lockbox admin-credentials create --dir DIR' on this host.\n", unlockKey)
	}
	m.log.Info("cluster initialised", "cluster", root.ClusterID, "node", nodeID, "admin_credentials", m.path("admin"))
	return nil
}

// restart brings back a manager that has run before; kek is the KEK from
// the unlock key under autolock (nil otherwise).
func (m *Manager) restart(ctx context.Context, kek *keys.KEK) error {
	if err := m.startEtcd(ctx, m.st.InitialCluster); err != nil {
		return err
	}
	if m.member != nil && m.member.IsLearner() {
		if m.testHookLearner != nil {
			if err := m.testHookLearner(); err != nil {
				return err
			}
		}
		if err := m.promoteSelf(ctx); err != nil {
			return err
		}
	}
	m.keys.OnKEKChange(m.kekChanged)
	if m.st.Autolock {
		switch err := m.keys.Unlock(ctx, kek); {
		case errors.Is(err, keys.ErrWrongKey):
			// Rotated while this manager was down: its files open with
			// the old key, the keyring only with the current one, which
			// the next Unlock gives (the files are then re-sealed).
			m.log.Warn("autolock: the unlock key opened this manager's files but not the keyring (rotated meanwhile); waiting for the current key")
			m.unlockNote = errRotatedWhileDown
			return nil
		case err != nil:
			return fmt.Errorf("manager: unlock data keys: %w", err)
		}
		m.log.Info("manager unlocked")
		return nil
	}
	kek, err := keys.LoadKeyFile(m.path("kek"))
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	defer kek.Zero()
	// A rotation made while this manager was down is followed (and the
	// file rewritten by kekChanged).
	if err := m.keys.UnlockFollowing(ctx, kek); err != nil {
		return fmt.Errorf("manager: unlock data keys with %s: %w (if the key-encryption key was rotated while this manager was down, copy the kek file from a running manager)", m.path("kek"), err)
	}
	return nil
}

// kekChanged follows a new KEK (a rotation, here or on another manager):
// under autolock it re-seals the manager's key files, without autolock it
// rewrites the KEK file.
func (m *Manager) kekChanged(kek *keys.KEK) {
	m.dropForwardLater()
	if m.st.Autolock {
		if err := m.nodeKey.reseal(kek); err != nil {
			m.log.Error("cannot re-seal this manager's key files under the new unlock key", "err", err)
		}
		return
	}
	defer kek.Zero()
	if cur, err := keys.LoadKeyFile(m.path("kek")); err == nil {
		same := cur.ID() == kek.ID()
		cur.Zero()
		if same {
			return
		}
	}
	if err := keys.ReplaceKeyFile(m.path("kek"), kek); err != nil {
		m.log.Error("cannot write the rotated key-encryption key file", "err", err)
		return
	}
	m.log.Info("key-encryption key file replaced after a rotation")
}

// defaultForwardTTL is how long a rotation's forward
// (keys.Manager.DropForward) stays in the keyring: long enough for every
// running manager's watch to follow, short so that the previous key soon
// leads nowhere. A manager down longer unlocks in two steps (autolock) or
// takes a copy of the kek file.
const defaultForwardTTL = 10 * time.Minute

// dropForwardLater drops the keyring's forward once its time has passed
// (every manager does, after each KEK change it sees: all but the first
// find nothing to do).
func (m *Manager) dropForwardLater() {
	ctx := m.runCtx
	if ctx == nil {
		return
	}
	ttl := m.cfg.forwardTTL
	if ttl == 0 {
		ttl = defaultForwardTTL
	}
	go func() {
		t := time.NewTimer(ttl)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := m.keys.DropForward(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("cannot drop the keyring's forward to the rotated key", "err", err)
		}
	}()
}
