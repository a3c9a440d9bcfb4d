"""The controller: kopf registrations, the reconcile of children, observation and promotion.

The only layer that combines decisions with I/O: it reads the cluster and its instances
(``observe``), applies what the builders produce (``reconcile``), observes and decides over time
(``supervisor``), runs promotions step by step (``runner``), serialises status writes
(``status``) and registers all of it with kopf (``handlers``, a few lines each). May import
every layer below (``api``, ``kube``, ``postgres``, ``gocd``, ``rules``, ``builders``), never
``cli`` or ``local``.
"""
