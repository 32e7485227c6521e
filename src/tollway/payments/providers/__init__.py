"""Payment providers behind one protocol (:mod:`.protocol`): the offline ``sandbox``
and ``stripe``, chosen by ``TOLLWAY_PAYMENT_PROVIDER`` (:mod:`.selection`)."""
