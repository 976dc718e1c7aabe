"""How many cores torch's update may take: /proc/stat read as the scheduler treats priorities."""

from stridelab.cores import busy_ticks

# cpu  user nice system idle iowait irq softirq steal
STAT = """cpu  300 700 30 1000 10 0 0 0
cpu0 100 0 10 500 5 0 0 0
cpu1 200 700 20 500 5 0 0 0
intr 12345
"""


def test_niced_user_time_counts_only_for_a_niced_reader():
    assert busy_ticks(STAT, [0, 1], count_niced=False) == 100 + 10 + 200 + 20
    assert busy_ticks(STAT, [0, 1], count_niced=True) == 100 + 10 + 200 + 700 + 20


def test_only_the_given_cores_and_never_idle_or_iowait():
    assert busy_ticks(STAT, [1], count_niced=True) == 920
    assert busy_ticks(STAT, [0], count_niced=False) == 110
    assert busy_ticks(STAT, [5], count_niced=True) == 0
