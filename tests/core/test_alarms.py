from station.alarms import AlarmBoard


def test_amend_changes_an_active_alarms_text_without_counting_it_again():
    board, seen = AlarmBoard(), []
    board.subscribe(seen.append)
    board.raise_("db", "database", "file set aside")
    board.amend("db", "file set aside; carried over: 2 users")
    (alarm,) = board.active()
    assert (alarm.message, alarm.count, board.raised_total) == ("file set aside; carried over: 2 users", 1, 1)
    assert [a.message for a in seen] == ["file set aside", "file set aside; carried over: 2 users"]


def test_amend_raises_an_alarm_that_is_not_active():
    board = AlarmBoard()
    board.raise_("db", "database", "first")
    board.clear("db")
    board.amend("db", "again")
    (alarm,) = board.active()
    assert (alarm.source, alarm.message, alarm.count) == ("database", "again", 1)
    board.amend("new", "never raised before")
    assert board.is_active("new") and board.raised_total == 3
