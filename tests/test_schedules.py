import pytest

from scalear.schedules import ScaleSchedule


def test_var_default_schedule_token_counts():
    s = ScaleSchedule.var_2d(256)
    assert s.shapes[-1] == (16, 16) and s.num_scales == 10
    # cumulative token counts quoted in VAR's code / CoDe's exit points
    cum = [o + n for o, n in zip(s.offsets, s.tokens_per_scale)]
    assert cum == [1, 5, 14, 30, 55, 91, 155, 255, 424, 680]
    assert ScaleSchedule.var_2d(512).total_tokens == 2240
    assert ScaleSchedule.var_2d(1024).total_tokens == 9451


def test_level_ids_match_offsets():
    s = ScaleSchedule.triplane((1, 2, 4))
    lvl = s.level_ids()
    assert lvl.shape == (s.total_tokens,) == (3 * (1 + 4 + 16),)
    for k in range(s.num_scales):
        assert (lvl[s.scale_slice(k)] == k).all()
        assert (lvl[: s.offsets[k]] < k).all()


def test_non_square_keeps_aspect_ratio():
    s = ScaleSchedule.grid_2d((12, 16), (1, 2, 4, 8, 16))
    assert s.shapes == ((1, 1), (2, 2), (3, 4), (6, 8), (12, 16))
    assert s.tokens_per_scale == (1, 4, 12, 48, 192)


@pytest.mark.parametrize(
    "make,shape",
    [
        (lambda: ScaleSchedule.seq_1d((1, 8, 32)), (32,)),
        (lambda: ScaleSchedule.volume_3d((1, 2, 4)), (4, 4, 4)),
        (lambda: ScaleSchedule.triplane((1, 4)), (3, 4, 4)),
    ],
)
def test_latent_shapes(make, shape):
    assert make().latent_shape == shape


def test_dict_round_trip_and_validation():
    s = ScaleSchedule.volume_3d((1, 2, 4))
    assert ScaleSchedule.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="must grow"):
        ScaleSchedule.square((1, 4, 2))
    with pytest.raises(ValueError, match="needs 2 positive sizes"):
        ScaleSchedule("2d", ((1,), (2,)))
    with pytest.raises(ValueError, match="unknown schedule kind"):
        ScaleSchedule("4d", ((1,),))
