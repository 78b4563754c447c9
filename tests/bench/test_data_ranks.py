"""bench/data_ranks.py: each rank of a several-process run decodes its rows only (the
training path), against the whole global batch (the path it replaced)."""
import pytest

from bench import data_ranks, train_speed

pytestmark = pytest.mark.slow  # starts process groups


def test_ranks_decode_their_share_of_the_global_batch(tmp_path):
    train_speed.write_photos(str(tmp_path), 4, 48)
    opt = data_ranks.parse(['--batch_size', '4', '--img_size', '32', '--iters', '2'])
    for reads, per_rank in (('shared', 3 * 4 // 2), ('whole', 3 * 4)):
        results = data_ranks.measure(opt, str(tmp_path), 2, reads)
        assert [r[0] for r in results] == [0, 1]
        assert [r[1] for r in results] == [per_rank, per_rank], reads
        assert all(r[2] > 0 and r[3] > 0 for r in results)
