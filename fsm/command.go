package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"google.golang.org/protobuf/proto"

	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// CommandType names the payload inside a command envelope.
type CommandType uint8

const (
	TypeIngest      CommandType = 1
	TypeTick        CommandType = 2
	TypeConfig      CommandType = 3
	TypeDrop        CommandType = 4
	TypeChecksum    CommandType = 5
	envelopeVersion             = 1
	envelopeSize                = 8
	flagIgnorable               = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	// ErrCorrupt marks a command or snapshot that fails its checksum or structure checks.
	ErrCorrupt = errors.New("corrupt")
	// ErrUnknownCommand marks a command type this replica does not know and may not skip.
	ErrUnknownCommand = errors.New("unknown command type")
)

// Envelope layout: version, type, flags, reserved, CRC32C(payload) little-endian, payload.
func encode(t CommandType, flags byte, m proto.Message) ([]byte, error) {
	payload, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("marshal command %d: %w", t, err)
	}
	buf := make([]byte, envelopeSize+len(payload))
	buf[0], buf[1], buf[2] = envelopeVersion, byte(t), flags
	binary.LittleEndian.PutUint32(buf[4:], crc32.Checksum(payload, castagnoli))
	copy(buf[envelopeSize:], payload)
	return buf, nil
}

// EncodeIngest frames an ingest entry for raft.Apply.
func EncodeIngest(e *pb.IngestEntry) ([]byte, error) { return encode(TypeIngest, 0, e) }

// EncodeTick frames a tick.
func EncodeTick(t *pb.Tick) ([]byte, error) { return encode(TypeTick, 0, t) }

// EncodeConfig frames a leaderboard config.
func EncodeConfig(c *pb.LeaderboardConfig) ([]byte, error) { return encode(TypeConfig, 0, c) }

// EncodeDrop frames a leaderboard drop.
func EncodeDrop(d *pb.DropLeaderboard) ([]byte, error) { return encode(TypeDrop, 0, d) }

// EncodeChecksum frames a checksum command.
func EncodeChecksum(c *pb.Checksum) ([]byte, error) { return encode(TypeChecksum, 0, c) }

// Command is a decoded log command. Exactly one field is set, or Ignored.
type Command struct {
	Type     CommandType
	Ingest   *pb.IngestEntry
	Tick     *pb.Tick
	Config   *pb.LeaderboardConfig
	Drop     *pb.DropLeaderboard
	Checksum *pb.Checksum
	Ignored  bool // unknown type flagged ignorable
}

// DecodeCommand checks the envelope and decodes its payload. Errors wrap
// ErrCorrupt or ErrUnknownCommand; a replica must stop on either. An ingest
// entry's strings alias data (see decodeIngest): data must outlive them.
func DecodeCommand(data []byte) (Command, error) { return decodeCommand(data, false) }

func decodeCommand(data []byte, protoIngest bool) (Command, error) {
	if len(data) < envelopeSize {
		return Command{}, fmt.Errorf("%w: command of %d bytes is shorter than its envelope", ErrCorrupt, len(data))
	}
	if data[0] != envelopeVersion {
		return Command{}, fmt.Errorf("%w: envelope version %d", ErrCorrupt, data[0])
	}
	payload := data[envelopeSize:]
	if got, want := crc32.Checksum(payload, castagnoli), binary.LittleEndian.Uint32(data[4:]); got != want {
		return Command{}, fmt.Errorf("%w: command crc32c %08x, envelope says %08x", ErrCorrupt, got, want)
	}
	c := Command{Type: CommandType(data[1])}
	var m proto.Message
	switch c.Type {
	case TypeIngest:
		var e *pb.IngestEntry
		var err error
		if protoIngest {
			e = &pb.IngestEntry{}
			err = proto.Unmarshal(payload, e)
		} else {
			e, err = decodeIngest(payload)
		}
		if err != nil {
			return Command{}, fmt.Errorf("%w: decode command %d: %v", ErrCorrupt, c.Type, err)
		}
		if err := checkIngest(e); err != nil {
			return Command{}, err
		}
		c.Ingest = e
		return c, nil
	case TypeTick:
		c.Tick = &pb.Tick{}
		m = c.Tick
	case TypeConfig:
		c.Config = &pb.LeaderboardConfig{}
		m = c.Config
	case TypeDrop:
		c.Drop = &pb.DropLeaderboard{}
		m = c.Drop
	case TypeChecksum:
		c.Checksum = &pb.Checksum{}
		m = c.Checksum
	default:
		if data[2]&flagIgnorable != 0 {
			c.Ignored = true
			return c, nil
		}
		return Command{}, fmt.Errorf("%w %d", ErrUnknownCommand, data[1])
	}
	if err := proto.Unmarshal(payload, m); err != nil {
		return Command{}, fmt.Errorf("%w: decode command %d: %v", ErrCorrupt, c.Type, err)
	}
	return c, nil
}

func checkIngest(e *pb.IngestEntry) error {
	for _, p := range e.Parts {
		for _, b := range p.Boards {
			n := len(b.Items)
			if len(b.Deltas) != n || len(b.EventTimesS) != n || (len(b.Events) != 0 && len(b.Events) != n) {
				return fmt.Errorf("%w: leaderboard %q deltas have unequal columns (items %d, deltas %d, times %d, events %d)",
					ErrCorrupt, b.Leaderboard, n, len(b.Deltas), len(b.EventTimesS), len(b.Events))
			}
		}
	}
	return nil
}
